from django.apps import AppConfig


class UsersConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "users"
    verbose_name = "Users"

    def ready(self) -> None:
        from tasks import dead_letters
        from users import receivers, tasks  # tasks declares the actors in every process, so the distributor finds them
        from users.services import delivery

        receivers.connect()
        # A dead-lettered email goes through its row again (which knows whether it is still wanted).
        dead_letters.register_requeue(tasks.send_verify_email.actor_name, delivery.retry_dead_letter)
        dead_letters.register_requeue(tasks.send_email.actor_name, delivery.retry_dead_letter)

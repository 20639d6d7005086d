from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Background tasks"

    def ready(self) -> None:
        from tasks import checks  # noqa: F401 - registers the system checks

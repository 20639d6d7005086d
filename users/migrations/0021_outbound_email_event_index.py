# Deleting a security event (the purge of anonymous ones, a user's deletion) sets the notices that
# told of it to no event: without an index that UPDATE read every email. Partial: most emails (links)
# have no event, so the sign-up's insert writes no entry.

from django.db import migrations, models

from users.migrations._operations import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    atomic = False  # CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("users", "0020_login_session_expiry_index"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="outboundemail",
            index=models.Index(
                condition=models.Q(("event__isnull", False)), fields=["event"], name="users_email_event"
            ),
        ),
    ]

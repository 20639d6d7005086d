# The hourly purge of log-in sessions long over reads them by expires_at.

from django.db import migrations, models

from users.migrations._operations import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    atomic = False  # CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("users", "0019_webauthn_challenge_per_ceremony"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="loginsession",
            index=models.Index(fields=["expires_at"], name="users_session_expires"),
        ),
    ]

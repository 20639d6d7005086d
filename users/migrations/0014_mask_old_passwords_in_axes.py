"""django-axes kept the current password typed into the account page's password form in clear
(``old_password`` was not among AXES_SENSITIVE_PARAMETERS): mask it in the rows already kept."""

import re

from django.db import migrations

MASK = "********************"
OLD_PASSWORD = re.compile(r"^old_password=.*$", re.MULTILINE)


def mask(apps, schema_editor):
    attempts = apps.get_model("axes", "AccessAttempt")  # the one model of axes that keeps the form
    for row in attempts.objects.filter(post_data__contains="old_password=").only("pk", "post_data").iterator():
        attempts.objects.filter(pk=row.pk).update(post_data=OLD_PASSWORD.sub(f"old_password={MASK}", row.post_data))


class Migration(migrations.Migration):
    dependencies = [("users", "0013_delivery_feedback"), ("axes", "0010_accessattemptexpiration")]

    operations = [migrations.RunPython(mask, migrations.RunPython.noop)]

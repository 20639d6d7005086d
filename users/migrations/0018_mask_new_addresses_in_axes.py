"""django-axes also kept the new address of an address change in clear (``email`` was not among
AXES_SENSITIVE_PARAMETERS when migration 0014 ran): mask it in the rows already kept. Masking
twice changes nothing, so a database that ran an earlier form of 0014 is left as it is."""

import re

from django.db import migrations

MASK = "********************"
NEW_ADDRESS = re.compile(r"^email=(?!\*{20}$).*$", re.MULTILINE)


def mask(apps, schema_editor):
    attempts = apps.get_model("axes", "AccessAttempt")  # the one model of axes that keeps the form
    for row in attempts.objects.filter(post_data__contains="email=").only("pk", "post_data").iterator():
        masked = NEW_ADDRESS.sub(f"email={MASK}", row.post_data)
        if masked != row.post_data:
            attempts.objects.filter(pk=row.pk).update(post_data=masked)


class Migration(migrations.Migration):
    dependencies = [("users", "0017_usernames_without_at"), ("axes", "0010_accessattemptexpiration")]

    operations = [migrations.RunPython(mask, migrations.RunPython.noop)]

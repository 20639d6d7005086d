"""django-axes kept the current password typed into the account page's password form in clear
(``old_password`` was not among AXES_SENSITIVE_PARAMETERS), and the new address of an address
change (``email``): mask both in the rows already kept."""

import re

from django.db import migrations
from django.db.models import Q

MASK = "********************"
CLEAR = re.compile(r"^(old_password|email)=.*$", re.MULTILINE)


def mask(apps, schema_editor):
    attempts = apps.get_model("axes", "AccessAttempt")  # the one model of axes that keeps the form
    kept = attempts.objects.filter(Q(post_data__contains="old_password=") | Q(post_data__contains="email="))
    for row in kept.only("pk", "post_data").iterator():
        attempts.objects.filter(pk=row.pk).update(post_data=CLEAR.sub(rf"\1={MASK}", row.post_data))


class Migration(migrations.Migration):
    dependencies = [("users", "0013_delivery_feedback"), ("axes", "0010_accessattemptexpiration")]

    operations = [migrations.RunPython(mask, migrations.RunPython.noop)]

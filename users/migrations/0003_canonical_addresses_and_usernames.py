"""One canonical form of every address and username (see users/identity.py).

Before the generated, uniquely indexed columns are added, existing rows are brought to the stored
form new ones get: usernames NFKC-normalised, address domains as lower-case IDNA A-labels. Where that
would make two accounts collide (legacy rows only; new input can no longer produce them):
- usernames that differ only in case or compatibility form: the oldest account keeps its name, the
  others get ``_<id>`` appended (printed, so staff can tell the people concerned);
- an address whose A-label form is another account's address keeps its Unicode spelling (so its
  canonical form differs and neither account blocks the other).
Open links of a converted address are converted with it, so they keep working.
Reservations of usernames that collide are merged (they hold no account).
"""

import unicodedata

import django.db.models.functions.text
from django.db import migrations, models

import users.identity


def _domain_a_label(email):
    local, at, domain = email.rpartition("@")
    if not at:
        return email
    try:
        return f"{local}@{domain.rstrip('.').encode('idna').decode('ascii').lower()}"
    except UnicodeError:
        return email


def canonicalise(apps, schema_editor):
    User = apps.get_model("users", "User")
    EmailVerification = apps.get_model("users", "EmailVerification")
    Reservation = apps.get_model("users", "UsernameReservation")
    taken_names: dict[str, int] = {}
    taken_emails = {email.lower() for email in User.objects.values_list("email", flat=True)}
    for user in User.objects.order_by("created_at", "id").only("id", "username", "email"):
        fields = []
        username = unicodedata.normalize("NFKC", user.username)
        if (other := taken_names.get(username.lower())) is not None:
            username = f"{username}_{user.pk}"[:150]
            print(f"\n  users: username of user {user.pk} collides with user {other}; renamed to {username!r}")
        taken_names[username.lower()] = user.pk
        if username != user.username:
            user.username, fields = username, [*fields, "username"]
        email = _domain_a_label(user.email)
        if email != user.email and email.lower() not in taken_emails:
            taken_emails.add(email.lower())
            # Its open links keep working: they compare their address with the account's.
            EmailVerification.objects.filter(user_id=user.pk, email=user.email).update(email=email)
            user.email, fields = email, [*fields, "email"]
        if fields:
            user.save(update_fields=fields)
    seen: set[str] = set()
    for reservation in Reservation.objects.order_by("id"):
        username = unicodedata.normalize("NFKC", reservation.username)
        if username.lower() in seen:
            reservation.delete()
            continue
        seen.add(username.lower())
        if username != reservation.username:
            reservation.username = username
            reservation.save(update_fields=["username"])


class Migration(migrations.Migration):
    dependencies = [("users", "0002_username_reservation")]

    operations = [
        migrations.RunPython(canonicalise, migrations.RunPython.noop, elidable=True),
        migrations.RemoveConstraint(model_name="user", name="users_user_email_ci_unique"),
        migrations.AlterField(
            model_name="user",
            name="username",
            field=models.CharField(
                error_messages={"unique": "A user with that username already exists."},
                help_text="150 characters or fewer. ASCII letters, digits and @/./+/-/_ only.",
                max_length=150,
                unique=True,
                validators=[users.identity.UsernameValidator()],
            ),
        ),
        migrations.AlterField(
            model_name="user",
            name="email",
            field=models.EmailField(max_length=254, validators=[users.identity.EmailAddressValidator()]),
        ),
        migrations.AlterField(
            model_name="user",
            name="full_name",
            field=models.CharField(max_length=255, validators=[users.identity.FullNameValidator()]),
        ),
        migrations.AddField(
            model_name="user",
            name="username_canonical",
            field=models.GeneratedField(
                db_persist=True,
                expression=django.db.models.functions.text.Lower("username"),
                output_field=models.CharField(max_length=150),
            ),
        ),
        migrations.AddField(
            model_name="user",
            name="email_canonical",
            field=models.GeneratedField(
                db_persist=True,
                expression=django.db.models.functions.text.Lower("email"),
                output_field=models.CharField(max_length=254),
            ),
        ),
        migrations.AddField(
            model_name="usernamereservation",
            name="username_canonical",
            field=models.GeneratedField(
                db_persist=True,
                expression=django.db.models.functions.text.Lower("username"),
                output_field=models.CharField(max_length=150),
            ),
        ),
        migrations.AddConstraint(
            model_name="user",
            constraint=models.UniqueConstraint(
                fields=("email_canonical",),
                name="users_user_email_canonical_unique",
                violation_error_message="A user with that email already exists.",
            ),
        ),
        migrations.AddConstraint(
            model_name="user",
            constraint=models.UniqueConstraint(
                fields=("username_canonical",),
                name="users_user_username_canonical_unique",
                violation_error_message="A user with that username already exists.",
            ),
        ),
        migrations.AddConstraint(
            model_name="usernamereservation",
            constraint=models.UniqueConstraint(fields=("username_canonical",), name="users_reservation_canonical_unique"),
        ),
    ]

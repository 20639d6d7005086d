"""Every email the service sends gets its own delivery record (``OutboundEmail``).

The delivery state that lived on ``EmailVerification`` (pending/sending/sent/failed, attempts, last
error, the claim, the dispatch and send times) moves to one ``OutboundEmail`` per verification, kind
``verification``; the verification keeps what the link needs (active/verified/superseded).
"""

import django.db.models.deletion
import django.db.models.functions.text
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

_LINK_STATE = {"verified": "verified", "superseded": "superseded"}  # everything else: active
_DELIVERY_STATE = {"verified": "sent"}  # a verified link's email was delivered; others keep theirs


def move_delivery_state(apps, schema_editor):
    EmailVerification = apps.get_model("users", "EmailVerification")
    OutboundEmail = apps.get_model("users", "OutboundEmail")
    batch = []
    for v in EmailVerification.objects.order_by("id").iterator(chunk_size=2000):
        batch.append(
            OutboundEmail(
                kind="verification",
                user_id=v.user_id,
                verification_id=v.pk,
                recipient=v.email,
                state=_DELIVERY_STATE.get(v.state, v.state),
                attempts=v.attempts,
                last_error=v.last_error,
                created_at=v.created_at,
                expires_at=v.expires_at,
                dispatched_at=v.dispatched_at,
                claimed_at=v.claimed_at,
                sent_at=v.sent_at,
            )
        )
        if len(batch) >= 2000:
            OutboundEmail.objects.bulk_create(batch)
            batch = []
    OutboundEmail.objects.bulk_create(batch)
    for old, new in _LINK_STATE.items():
        EmailVerification.objects.filter(state=old).update(link_state=new)


def move_back(apps, schema_editor):
    EmailVerification = apps.get_model("users", "EmailVerification")
    for email in apps.get_model("users", "OutboundEmail").objects.filter(kind="verification").iterator():
        state = email.state
        link_state = EmailVerification.objects.filter(pk=email.verification_id).values_list("link_state", flat=True)
        if link_state and link_state[0] != "active":
            state = link_state[0]
        EmailVerification.objects.filter(pk=email.verification_id).update(
            state=state,
            attempts=email.attempts,
            last_error=email.last_error,
            dispatched_at=email.dispatched_at,
            claimed_at=email.claimed_at,
            sent_at=email.sent_at,
        )


class Migration(migrations.Migration):
    dependencies = [("users", "0003_canonical_addresses_and_usernames")]

    operations = [
        migrations.CreateModel(
            name="OutboundEmail",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("verification", "verification link (sign-up)"),
                            ("account_exists", "account exists notice"),
                            ("email_change", "address change link"),
                            ("email_change_notice", "address change notice"),
                            ("password_reset", "password reset link"),
                        ],
                        max_length=32,
                    ),
                ),
                ("recipient", models.EmailField(max_length=254)),
                (
                    "recipient_canonical",
                    models.GeneratedField(
                        db_persist=True,
                        expression=django.db.models.functions.text.Lower("recipient"),
                        output_field=models.CharField(max_length=254),
                    ),
                ),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("pending", "pending"),
                            ("sending", "sending"),
                            ("sent", "sent"),
                            ("failed", "failed"),
                            ("superseded", "superseded"),
                        ],
                        db_index=True,
                        default="pending",
                        max_length=16,
                    ),
                ),
                ("attempts", models.PositiveIntegerField(default=0, help_text="SMTP send attempts so far.")),
                ("last_error", models.TextField(blank=True, default="")),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("expires_at", models.DateTimeField(help_text="Not sent after this (a dead link is never mailed).")),
                ("dispatched_at", models.DateTimeField(help_text="When a message for it was last put on the queue.")),
                (
                    "claimed_at",
                    models.DateTimeField(blank=True, help_text="When a worker last took it to send.", null=True),
                ),
                ("sent_at", models.DateTimeField(blank=True, null=True)),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="emails", to=settings.AUTH_USER_MODEL
                    ),
                ),
                (
                    "verification",
                    models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="outbound",
                        to="users.emailverification",
                    ),
                ),
            ],
            options={"ordering": ["-created_at", "-id"]},
        ),
        migrations.AddField(
            model_name="emailverification",
            name="purpose",
            field=models.CharField(
                choices=[("signup", "verify the account's address"), ("change", "switch the account to a new address")],
                default="signup",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="emailverification",
            name="link_state",
            field=models.CharField(default="active", max_length=16),
        ),
        # Nullable first, so that migrating back can re-add the column before filling it.
        migrations.AlterField(
            model_name="emailverification",
            name="dispatched_at",
            field=models.DateTimeField(help_text="When a message for it was last put on the queue.", null=True),
        ),
        migrations.RunPython(move_delivery_state, move_back),
        migrations.RemoveIndex(model_name="emailverification", name="users_verif_unfinished"),
        migrations.RemoveField(model_name="emailverification", name="state"),
        migrations.RenameField(model_name="emailverification", old_name="link_state", new_name="state"),
        migrations.AlterField(
            model_name="emailverification",
            name="state",
            field=models.CharField(
                choices=[("active", "active"), ("verified", "verified"), ("superseded", "superseded")],
                db_index=True,
                default="active",
                max_length=16,
            ),
        ),
        migrations.RemoveField(model_name="emailverification", name="attempts"),
        migrations.RemoveField(model_name="emailverification", name="last_error"),
        migrations.RemoveField(model_name="emailverification", name="dispatched_at"),
        migrations.RemoveField(model_name="emailverification", name="claimed_at"),
        migrations.RemoveField(model_name="emailverification", name="sent_at"),
        migrations.AddIndex(
            model_name="outboundemail",
            index=models.Index(fields=["user", "-created_at"], name="users_email_user_created"),
        ),
        migrations.AddIndex(
            model_name="outboundemail",
            index=models.Index(fields=["recipient_canonical", "-created_at"], name="users_email_recipient_created"),
        ),
        migrations.AddIndex(
            model_name="outboundemail",
            index=models.Index(
                condition=models.Q(("state__in", ["pending", "sending"])),
                fields=["dispatched_at"],
                name="users_email_unfinished",
            ),
        ),
    ]

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create(self, username: str, email: str, password: str | None, **extra: Any) -> User:
        user = self.model(username=username, email=self.normalize_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, username: str, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create(username, email, password, **extra)

    def create_superuser(self, username: str, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        extra.setdefault("is_email_verified", True)
        return self._create(username, email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """A bank customer (or a member of staff, who may use the admin)."""

    username = models.CharField(
        max_length=150,
        unique=True,
        validators=[UnicodeUsernameValidator()],
        help_text="150 characters or fewer. Letters, digits and @/./+/-/_ only.",
        error_messages={"unique": "A user with that username already exists."},
    )
    full_name = models.CharField(max_length=255)
    email = models.EmailField(max_length=254)
    is_email_verified = models.BooleanField(default=False)
    password_changed_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False, help_text="Whether the user can log into the admin.")

    objects = UserManager()

    USERNAME_FIELD = "username"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = ["email", "full_name"]

    class Meta:
        constraints: ClassVar = [
            # Addresses compare case-insensitively everywhere, uniqueness included.
            models.UniqueConstraint(
                Lower("email"),
                name="users_user_email_ci_unique",
                violation_error_message="A user with that email already exists.",
            ),
        ]

    def __str__(self) -> str:
        return self.username

    def set_password(self, raw_password: str | None) -> None:
        super().set_password(raw_password)
        self.password_changed_at = timezone.now()


class EmailVerification(models.Model):
    """One verification email: the source of truth for whether it still has to be sent.

    The secret code itself is never stored: it is an HMAC of ``(id, nonce)`` under the
    ``SECRET_KEY``, recomputed when the email is rendered and when a link is checked. A new
    nonce (a new verification row) therefore means a new link, and re-rendering the same row
    always gives the same link.
    """

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        SENDING = "sending", "sending"
        SENT = "sent", "sent"
        FAILED = "failed", "failed"
        VERIFIED = "verified", "verified"
        SUPERSEDED = "superseded", "superseded"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="email_verifications")
    email = models.EmailField(max_length=254, help_text="The address the link was sent to.")
    nonce = models.CharField(max_length=64, editable=False)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0, help_text="SMTP send attempts so far.")
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    expires_at = models.DateTimeField()
    dispatched_at = models.DateTimeField(help_text="When a message for it was last put on the queue.")
    claimed_at = models.DateTimeField(null=True, blank=True, help_text="When a worker last took it to send.")
    sent_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering: ClassVar = ["-created_at", "-id"]
        indexes: ClassVar = [
            models.Index(fields=["user", "-created_at"], name="users_verif_user_created"),
            # The redispatch sweep looks only at unfinished rows.
            models.Index(
                fields=["dispatched_at"],
                name="users_verif_unfinished",
                condition=models.Q(state__in=["pending", "sending"]),
            ),
        ]

    def __str__(self) -> str:
        return f"verification {self.pk} for {self.email} ({self.state})"

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()


class UsernameReservation(models.Model):
    """A username given out in an answer to a sign-up that created no account.

    When an address already has an account, sign-up answers as if it had created one, with the
    username that was asked for. Were that username still free afterwards, signing up with it again
    would tell an attacker the address is registered; so it is kept, like a real account's.
    """

    username = models.CharField(max_length=150, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.username

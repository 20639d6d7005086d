from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import Any, ClassVar

import idna
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models, transaction
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from users.identity import (
    EmailAddressValidator,
    FullNameValidator,
    UsernameValidator,
    a_label,
    canonical_username,
    normalize_email,
    normalize_username,
)
from users.signals import account_deactivated, password_changed


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def lock(self, user: User, *, as_checked: bool = False) -> bool:
        """Inside a transaction: lock ``user``'s row, the lock every change of a password, a factor or
        a session takes first. ``FOR NO KEY UPDATE``: they wait for one another, while a security
        event's insert (its key share on the user) never waits on it. With ``as_checked``: whether
        the account is still active with the password hash ``user`` was read with (a change that
        committed while a password was being checked shows here)."""
        rows = self.select_for_update(no_key=True).filter(pk=user.pk)
        if as_checked:
            rows = rows.filter(password=user.password, is_active=True)
        return rows.exists()

    def _create(self, username: str, email: str, password: str | None, **extra: Any) -> User:
        user = self.model(username=normalize_username(username), email=normalize_email(email), **extra)
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

    def get_by_natural_key(self, username: str | None) -> User:
        """Log-in by username is case-insensitive and NFKC-blind, like uniqueness."""
        return self.get(username_canonical=canonical_username(username or ""))


class User(AbstractBaseUser, PermissionsMixin):
    """A bank customer (or a member of staff, who may use the admin)."""

    class Role(models.TextChoices):
        DEPOSITOR = "depositor", "depositor"
        BANKER = "banker", "banker"

    username = models.CharField(
        max_length=150,
        unique=True,
        validators=[UsernameValidator()],
        help_text="150 characters or fewer. ASCII letters, digits and ./+/-/_ only (no @).",
        error_messages={"unique": "A user with that username already exists."},
    )
    # What uniqueness and log-in compare (users/identity.py): computed by the database, so it can
    # never disagree with the username or the address it comes from.
    username_canonical = models.GeneratedField(
        expression=Lower("username"), output_field=models.CharField(max_length=150), db_persist=True
    )
    full_name = models.CharField(max_length=255, validators=[FullNameValidator()])
    email = models.EmailField(max_length=254, validators=[EmailAddressValidator()])
    email_canonical = models.GeneratedField(
        expression=Lower("email"), output_field=models.CharField(max_length=254), db_persist=True
    )
    is_email_verified = models.BooleanField(default=False)
    # An address the user asked to switch to, until its link is used (then it replaces ``email``).
    pending_email = models.EmailField(max_length=254, blank=True, default="")
    password_changed_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False, help_text="Whether the user can log into the admin.")
    role = models.CharField(
        max_length=16,
        choices=Role.choices,
        default=Role.DEPOSITOR,
        help_text="Bankers may change any customer's profile through the API; set by staff only.",
    )

    # The state of the latest verification email, for the admin's filter over a million users. The
    # database keeps it (a trigger on users_outboundemail, migration 0007); save() never writes it.
    verification_state = models.CharField(
        max_length=16,
        blank=True,
        default="",
        db_default="",
        editable=False,
        help_text="The state of the latest verification email (kept by the database).",
    )

    objects = UserManager()

    USERNAME_FIELD = "username"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = ["email", "full_name"]

    class Meta:
        indexes: ClassVar = [
            # The admin's list pages newest first without sorting, and its deep pages by id only.
            models.Index(fields=["-created_at", "-id"], name="users_user_created_id"),
            # The admin's "verification email" filter: a range of this index is the page and its count.
            models.Index(fields=["verification_state", "-created_at", "-id"], name="users_user_verification_state"),
            # Sign-ups nobody completed, oldest first (what the purge deletes).
            models.Index(
                fields=["created_at"],
                name="users_user_never_verified",
                condition=Q(is_email_verified=False, last_login__isnull=True),
            ),
            # "Username starts with …" in the admin's search (a LIKE 'x%' under any collation).
            models.Index(
                fields=["username_canonical"], opclasses=["varchar_pattern_ops"], name="users_user_username_prefix"
            ),
        ]
        constraints: ClassVar = [
            models.UniqueConstraint(
                fields=["email_canonical"],
                name="users_user_email_canonical_unique",
                violation_error_message="A user with that email already exists.",
            ),
            models.UniqueConstraint(
                fields=["username_canonical"],
                name="users_user_username_canonical_unique",
                violation_error_message="A user with that username already exists.",
            ),
        ]

    def __str__(self) -> str:
        return self.username

    def set_password(self, raw_password: str | None) -> None:
        super().set_password(raw_password)
        self.password_changed_at = timezone.now()

    def set_unusable_password(self) -> None:
        """The admin's "password-based authentication: disabled" is a password change too."""
        super().set_unusable_password()
        self.password_changed_at = timezone.now()
        self._password_disabled = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Saving an existing user writes every loaded field but ``verification_state``: the
        database keeps that one, and this instance's copy may be older than the last email's state.

        A saved new password (``set_password`` then ``save``, whoever does it: the API, a reset, the
        account page, the admin's password form, ``manage.py changepassword``) sends
        ``password_changed`` inside the same transaction: its receiver revokes the sessions, cancels
        a pending address change, records the event and queues the notice. Django's hash upgrade at
        log-in (``check_password``) is not a change and sends nothing."""
        changed = getattr(self, "_password", None) is not None or getattr(self, "_password_disabled", False)
        self._password_disabled = False
        existing = not self._state.adding and self.pk is not None
        # Saved inactive (the admin's "active" unticked), however the instance was loaded: its sessions
        # end, or re-activating it would bring back every token and browser that was logged in (a
        # review). An account that has none left costs one UPDATE that changes nothing.
        fields = kwargs.get("update_fields")
        deactivated = existing and not self.is_active and (fields is None or "is_active" in fields)
        if existing and (changed or deactivated):
            with transaction.atomic(using=kwargs.get("using") or self._state.db or "default"):
                self._save(*args, **kwargs)
                if changed:
                    password_changed.send(sender=User, user=self)
                if deactivated:
                    account_deactivated.send(sender=User, user=self)
        else:
            self._save(*args, **kwargs)

    def _save(self, *args: Any, **kwargs: Any) -> None:
        if (
            not args
            and kwargs.get("update_fields") is None
            and not kwargs.get("force_insert")
            and not self._state.adding
            and self.pk is not None
            and kwargs.get("using", self._state.db) == self._state.db
        ):
            deferred = self.get_deferred_fields()
            kwargs["update_fields"] = [name for name in _USER_SAVED_FIELDS if name not in deferred]
        super().save(*args, **kwargs)


_USER_SAVED_FIELDS = [
    f.attname
    for f in User._meta.concrete_fields
    if not f.primary_key and not f.generated and f.name != "verification_state"
]


class EmailVerificationQuerySet(models.QuerySet["EmailVerification"]):
    def alive(self, now: datetime | None = None) -> EmailVerificationQuerySet:
        """Links that still work: not used, not replaced, not expired. The one spelling of it."""
        return self.filter(state=EmailVerification.State.ACTIVE, expires_at__gt=now or timezone.now())


class EmailVerification(models.Model):
    """A link that proves its reader controls an address (what a verification email is about).

    The secret code itself is never stored: it is an HMAC of ``(id, nonce)`` under the
    ``SECRET_KEY``, recomputed when the email is rendered and when a link is checked. A new
    nonce (a new row) therefore means a new link, and re-rendering a row gives the same link.
    Whether its email went out is the business of its ``OutboundEmail``.
    """

    class State(models.TextChoices):
        ACTIVE = "active", "active"
        VERIFIED = "verified", "verified"
        SUPERSEDED = "superseded", "superseded"

    class Purpose(models.TextChoices):
        SIGNUP = "signup", "verify the account's address"
        CHANGE = "change", "switch the account to a new address"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="email_verifications")
    email = models.EmailField(max_length=254, help_text="The address the link was sent to.")
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.SIGNUP)
    nonce = models.CharField(max_length=64, editable=False)
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE, db_index=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    expires_at = models.DateTimeField()
    verified_at = models.DateTimeField(null=True, blank=True)

    objects = EmailVerificationQuerySet.as_manager()

    class Meta:
        ordering: ClassVar = ["-created_at", "-id"]
        indexes: ClassVar = [models.Index(fields=["user", "-created_at"], name="users_verif_user_created")]

    def __str__(self) -> str:
        return f"verification {self.pk} for {self.email} ({self.state})"

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()


class OutboundEmailQuerySet(models.QuerySet["OutboundEmail"]):
    def unfinished(self) -> OutboundEmailQuerySet:
        return self.filter(state__in=OutboundEmail.UNFINISHED)

    def claimable(self, *, now: datetime, stale: datetime, max_attempts: int | None = None) -> OutboundEmailQuerySet:
        """Rows a delivery may take: pending, or claimed by a worker whose claim went stale; still
        worth sending; under the attempt cap. The one spelling of it (the claim compiles it)."""
        states = OutboundEmail.State
        return self.filter(
            Q(state=states.PENDING) | Q(state=states.SENDING, claimed_at__lt=stale),
            expires_at__gt=now,
            attempts__lt=settings.VERIFY_EMAIL_MAX_ATTEMPTS if max_attempts is None else max_attempts,
        )

    def unclaimed(self, *, stale: datetime, failed_too: bool = False) -> OutboundEmailQuerySet:
        """Rows nobody is sending right now (so they may be failed or superseded), and with
        ``failed_too`` the failed ones (which "retry failed" could otherwise send again)."""
        states = OutboundEmail.State
        unclaimed = Q(state=states.PENDING) | Q(state=states.SENDING, claimed_at__lt=stale)
        return self.filter(unclaimed | Q(state=states.FAILED) if failed_too else unclaimed)

    def to_address(self, canonical: str, *, since: datetime, kinds: Sequence[str]) -> OutboundEmailQuerySet:
        """Emails of these kinds queued for an address since a moment (the cooldowns): sent, or
        that may still go — not one superseded before any attempt, which never reached anyone."""
        return self.filter(recipient_canonical=canonical, created_at__gt=since, kind__in=kinds).exclude(
            state=OutboundEmail.State.SUPERSEDED, attempts=0
        )


class OutboundEmail(models.Model):
    """One email the service owes someone: the source of truth for whether it still has to go.

    Every kind goes through the same engine (``users/services/delivery.py``): queued after commit,
    claimed with one conditional UPDATE, fenced by the claim, classified by the SMTP answer,
    recovered by the sweep. ``pending → sending → sent | failed``; ``superseded`` when it is no
    longer wanted (a newer link replaced it, the address changed, the address was verified).
    """

    class Kind(models.TextChoices):
        VERIFICATION = "verification", "verification link (sign-up)"
        ACCOUNT_EXISTS = "account_exists", "account exists notice"
        EMAIL_CHANGE = "email_change", "address change link"
        EMAIL_CHANGE_NOTICE = "email_change_notice", "address change notice"
        PASSWORD_RESET = "password_reset", "password reset link"
        SECURITY_NOTICE = "security_notice", "security notice"

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        SENDING = "sending", "sending"
        SENT = "sent", "sent"
        FAILED = "failed", "failed"
        SUPERSEDED = "superseded", "superseded"
        # The mail provider reported a bounce, a rejection or a complaint after accepting it.
        UNDELIVERABLE = "undeliverable", "undeliverable (bounced or complained)"
        # Never sent: its address is suppressed (an earlier bounce or complaint), until staff lift it.
        SUPPRESSED = "suppressed", "not sent: address suppressed"

    UNFINISHED: ClassVar = [State.PENDING, State.SENDING]

    kind = models.CharField(max_length=32, choices=Kind.choices)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="emails")
    # What a link email is about; None for notices and password resets (Django's token).
    verification = models.OneToOneField(
        EmailVerification, on_delete=models.CASCADE, null=True, blank=True, related_name="outbound"
    )
    # What a security notice tells (a password changed, an address replaced…), or the request an
    # address-change notice is about; None for other kinds.
    event = models.ForeignKey(
        "SecurityEvent", on_delete=models.SET_NULL, null=True, blank=True, related_name="notices", db_index=False
    )
    recipient = models.EmailField(max_length=254)
    recipient_canonical = models.GeneratedField(
        expression=Lower("recipient"), output_field=models.CharField(max_length=254), db_persist=True
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0, help_text="SMTP send attempts so far.")
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(help_text="Not sent after this (a dead link is never mailed).")
    dispatched_at = models.DateTimeField(help_text="When a message for it was last put on the queue.")
    claimed_at = models.DateTimeField(null=True, blank=True, help_text="When a worker last took it to send.")
    sent_at = models.DateTimeField(null=True, blank=True)
    # Set by the claim (not a column): whether the address is suppressed, so it must not be sent.
    suppressed_now = False
    # What the mail provider (an anymail backend) called it when it accepted it; None over SMTP.
    provider_message_id = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    delivered_at = models.DateTimeField(null=True, blank=True, help_text="When the provider reported it delivered.")

    objects = OutboundEmailQuerySet.as_manager()

    class Meta:
        ordering: ClassVar = ["-created_at", "-id"]
        indexes: ClassVar = [
            models.Index(fields=["user", "-created_at"], name="users_email_user_created"),
            models.Index(fields=["recipient_canonical", "-created_at"], name="users_email_recipient_created"),
            # The redispatch sweep looks only at unfinished rows.
            models.Index(
                fields=["dispatched_at"], name="users_email_unfinished", condition=Q(state__in=["pending", "sending"])
            ),
            # The oldest unsent email (a gauge), and the unsent counts, from a few index entries.
            models.Index(
                fields=["kind", "state", "created_at"],
                name="users_email_unsent",
                condition=Q(state__in=["pending", "sending"]),
            ),
            # The notices that told of an event, found when the event is deleted (the purge, a user's
            # deletion: SET_NULL); only rows that have one, so a link email's insert writes no entry.
            models.Index(fields=["event"], name="users_email_event", condition=Q(event__isnull=False)),
            # A user's verification emails newest first: what the triggers that keep the user's
            # verification_state read (migration 0007), one index descent per write.
            models.Index(
                fields=["user", "-created_at", "-id"],
                name="users_email_latest_verif",
                condition=Q(kind="verification"),
            ),
            # A provider's event names the email by the id it gave (users.services.feedback).
            models.Index(
                fields=["provider_message_id"],
                name="users_email_provider_id",
                condition=Q(provider_message_id__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} email {self.pk} to {self.recipient} ({self.state})"

    @property
    def message_id(self) -> str:
        """Deterministic per email: a re-send is recognisably the same message (and mail systems
        fold the two); an HMAC, so nobody can forge the id of another person's email."""
        mac = self._message_id_mac(settings.SECRET_KEY)
        return f"<{self.kind.replace('_', '-')}.{self.pk}.{mac}@{self.message_id_domain()}>"

    @staticmethod
    def message_id_domain() -> str:
        """The domain of every ``Message-ID`` the service writes: the sender's (``Simple Bank
        <noreply@bank.example>`` as well as ``noreply@bank.example``)."""
        return _sender_domain(settings.DEFAULT_FROM_EMAIL)

    @property
    def feedback_ref(self) -> str:
        """The ``Message-ID`` without its domain (``kind.pk.mac``): the metadata an anymail backend
        sends with the email, for providers whose events name it by their own id only."""
        return self.message_id.strip("<>").rpartition("@")[0]

    def _message_id_mac(self, key: str) -> str:
        digest = salted_hmac("users.outbound_email.message_id", str(self.pk), secret=key, algorithm="sha256")
        return digest.hexdigest()[:24]

    def is_message_id(self, kind: str, mac: str) -> bool:
        """Whether a ``Message-ID``'s kind and HMAC name this email — under the current key or a
        fallback (a provider reports on an email sent before a key rotation). The domain is the
        caller's to check (``users.services.feedback``)."""
        keys = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
        return kind == self.kind.replace("_", "-") and any(
            constant_time_compare(mac, self._message_id_mac(key)) for key in keys
        )


@functools.lru_cache(maxsize=8)
def _sender_domain(sender: str) -> str:
    """``OutboundEmail.message_id_domain``, worked out once per sender rather than per email."""
    _, at, domain = parseaddr(sender)[1].rpartition("@")
    if not at or not domain:  # a sender with no domain ("noreply")
        return "localhost"
    try:  # an international domain as its A-label, as Django writes it in From: (a header is ASCII)
        return a_label(domain)
    except (idna.IDNAError, UnicodeError):  # none IDNA takes: its ASCII, else ours
        return domain.encode("ascii", "ignore").decode().lower() or "localhost"


class DeliveryEvent(models.Model):
    """What the mail provider said about an email after it was sent (its tracking webhook, through
    django-anymail): delivered, bounced, deferred, complained… One row per provider event; a replay
    (the same ``event_key``) adds nothing. Never the raw payload: it may hold the whole message."""

    email = models.ForeignKey(OutboundEmail, on_delete=models.CASCADE, related_name="feedback")
    esp = models.CharField("provider", max_length=32)
    # "<esp>:<the provider's event id>", or a digest of the event's own fields when it has no id.
    event_key = models.CharField(max_length=200, unique=True)
    event_type = models.CharField(max_length=16)
    reason = models.CharField(max_length=32, blank=True, default="", help_text="anymail's reject_reason.")
    description = models.TextField(blank=True, default="", help_text="The provider's words (or the MTA's answer).")
    occurred_at = models.DateTimeField(null=True, blank=True, help_text="When the provider says it happened.")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering: ClassVar = ["received_at", "id"]

    def __str__(self) -> str:
        return f"{self.esp} {self.event_type} for email {self.email_id}"


class SuppressionQuerySet(models.QuerySet["Suppression"]):
    def active(self) -> SuppressionQuerySet:
        return self.filter(lifted_at__isnull=True)

    def covering(self, address: str) -> SuppressionQuerySet:
        """The live suppression of ``address`` (any spelling: kept in lower case), if there is one."""
        return self.active().filter(address=address.lower())


class Suppression(models.Model):
    """An address nothing more is sent to — of any kind — because the provider reported a bounce,
    a rejection or a complaint for it; until staff lift it in the admin (the row stays, lifted)."""

    address = models.CharField(max_length=254, help_text="The address in its canonical (lower-case) form.")
    reason = models.CharField(max_length=16, help_text="The event that suppressed it.")
    detail = models.TextField(blank=True, default="")
    email = models.ForeignKey(
        OutboundEmail, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(default=timezone.now)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )

    objects = SuppressionQuerySet.as_manager()

    class Meta:
        ordering: ClassVar = ["-created_at", "-id"]
        constraints: ClassVar = [
            # One live suppression per address; lifted ones are history.
            models.UniqueConstraint(
                fields=["address"], condition=Q(lifted_at__isnull=True), name="users_suppressed_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.address} ({self.reason}{', lifted' if self.lifted_at else ''})"


class UsernameReservation(models.Model):
    """A username given out in an answer to a sign-up that created no account.

    When an address already has an account, sign-up answers as if it had created one, with the
    username that was asked for. Were that username still free afterwards, signing up with it again
    would tell an attacker the address is registered; so it is kept, like a real account's — for as
    long as an account that was never verified is kept (``UNVERIFIED_ACCOUNT_MAX_AGE``): the sweep
    frees both at the same age (``signup.stale_signups_purge``), so which names are held tells
    nothing, and nobody holds a name for ever by signing up with their own address.
    """

    username = models.CharField(max_length=150, unique=True)
    username_canonical = models.GeneratedField(
        expression=Lower("username"), output_field=models.CharField(max_length=150), db_persist=True
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The sign-up's address (canonical) and the hash of its password, made anyway: a log-in with
    # them answers as the never-verified account a new address would have made ("verify your
    # address first"), or logging in after signing up would tell which addresses are registered.
    email_canonical = models.CharField(max_length=254, blank=True, default="", db_index=True)
    password = models.CharField(max_length=128, blank=True, default="")

    class Meta:
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["username_canonical"], name="users_reservation_canonical_unique")
        ]

    def __str__(self) -> str:
        return self.username


class LoginSessionQuerySet(models.QuerySet["LoginSession"]):
    def live(self, now: datetime | None = None) -> LoginSessionQuerySet:
        """Sessions that still work: not revoked, not blocked, not expired, not idle for longer than
        ``SESSION_IDLE_TIMEOUT``. The one spelling of it (``LoginSession.is_live`` says the same)."""
        now = now or timezone.now()
        return self.filter(
            revoked_at__isnull=True,
            blocked_at__isnull=True,
            expires_at__gt=now,
            last_used_at__gt=now - timedelta(seconds=settings.SESSION_IDLE_TIMEOUT),
        )


class LoginSession(models.Model):
    """One log-in, through the API or a browser (``/login/``, the admin's log-in).

    An API session's access and refresh tokens name it (``sid``), so revoking or blocking it ends
    both. Only the ``jti`` of the one refresh token that may be used next is kept; presenting any
    other (an older, rotated one) means it was copied: the whole session ends. A browser session's
    Django session names it; a browser whose row is no longer live is logged out at its next request.
    """

    class Kind(models.TextChoices):
        API = "api", "api"
        BROWSER = "browser", "browser"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="login_sessions")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.API)
    user_agent = models.CharField(max_length=256, blank=True, default="")
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(help_text="The refresh tokens of this log-in stop working then.")
    last_used_at = models.DateTimeField(default=timezone.now)
    refresh_jti = models.CharField(max_length=64, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=64, blank=True, default="")
    blocked_at = models.DateTimeField(null=True, blank=True, help_text="Set by staff: its tokens stop working.")

    objects = LoginSessionQuerySet.as_manager()

    class Meta:
        ordering: ClassVar = ["-created_at"]
        indexes: ClassVar = [
            models.Index(fields=["user", "-created_at"], name="users_session_user_created"),
            # The hourly purge of sessions long over (users.services.retention).
            models.Index(fields=["expires_at"], name="users_session_expires"),
        ]

    def __str__(self) -> str:
        return f"session {self.pk} of {self.user_id}"

    @property
    def is_live(self) -> bool:
        return self.revoked_at is None and self.blocked_at is None and self.ends_at > timezone.now()

    @property
    def ends_at(self) -> datetime:
        """When it ends without another request: idle after ``SESSION_IDLE_TIMEOUT``, at
        ``expires_at`` at the latest."""
        return min(self.last_used_at + timedelta(seconds=settings.SESSION_IDLE_TIMEOUT), self.expires_at)


class SecurityEvent(models.Model):
    """Who did what to an account, when and from where: one append-only row per security-relevant
    event (a log-in, a password changed, a session revoked…), written by ``users.services.events``.

    Never a secret: ``detail`` names what changed (field names, a session's kind), not values.
    PostgreSQL refuses to UPDATE a row (a trigger, migration 0009); deleting the user deletes its
    events (erasure). Events with no user (failed log-ins naming no account) are deleted after
    ``ANONYMOUS_EVENT_MAX_AGE`` (``users.services.retention``); nothing else deletes them.
    """

    class Kind(models.TextChoices):
        LOGIN = "login", "logged in"
        LOGIN_FAILED = "login_failed", "failed log-in"
        LOGOUT = "logout", "logged out"
        REFRESH_REUSE = "refresh_reuse", "a spent refresh token was used again (session revoked)"
        SESSION_REVOKED = "session_revoked", "session revoked"
        SESSION_BLOCKED = "session_blocked", "session blocked by staff"
        PASSWORD_CHANGED = "password_changed", "password changed"
        PASSWORD_RESET = "password_reset", "password reset by email link"
        EMAIL_CHANGE_REQUESTED = "email_change_requested", "email address change requested"
        EMAIL_CHANGED = "email_changed", "email address replaced"
        PROFILE_CHANGED = "profile_changed", "profile changed"
        MFA_ENABLED = "mfa_enabled", "second factor turned on"
        MFA_DISABLED = "mfa_disabled", "second factor turned off"
        RECOVERY_CODES_REGENERATED = "recovery_codes_regenerated", "recovery codes regenerated"
        RECOVERY_CODE_USED = "recovery_code_used", "recovery code used"
        PASSKEY_ADDED = "passkey_added", "passkey added"
        PASSKEY_REMOVED = "passkey_removed", "passkey removed"
        MFA_RESET_BY_STAFF = "mfa_reset_by_staff", "second factors reset by staff"
        SECOND_STEP_FAILED = "second_step_failed", "log-in with the right password, but a wrong second factor"
        ADDRESS_SUPPRESSED = "address_suppressed", "email address suppressed (bounced or complained)"
        ADDRESS_SUPPRESSION_LIFTED = "address_suppression_lifted", "email address suppression lifted by staff"

    # None for a failed log-in that named no account (so writing it costs the same either way).
    user = models.ForeignKey(User, on_delete=models.CASCADE, null=True, blank=True, related_name="security_events")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    at = models.DateTimeField(default=timezone.now)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=256, blank=True, default="")
    # ``self``, ``banker:<username>``, ``staff:<username>`` or ``system``, as it was at the time.
    actor = models.CharField(max_length=160, default="system")
    actor_user = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )
    detail = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering: ClassVar = ["-at", "-id"]
        indexes: ClassVar = [
            models.Index(fields=["user", "-at", "-id"], name="users_event_user_at"),
            models.Index(fields=["kind", "-at"], name="users_event_kind_at"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} of {self.user_id} at {self.at:%Y-%m-%d %H:%M:%S}"


class AddressRequestQuerySet(models.QuerySet["AddressRequest"]):
    def unprocessed(self) -> AddressRequestQuerySet:
        return self.filter(processed_at__isnull=True)


class AddressRequest(models.Model):
    """An address someone typed into a public form asking for an email (a password reset, a new
    verification link), recorded as it came, whether or not the address has an account.

    The web request only inserts this row and queues its id (so it does the same work for every
    address, and its timing tells nothing); a worker looks the address up and queues the email, if
    any, exactly once (``users.services.address_requests``). The sweep queues again a row whose
    message was lost, and deletes rows after ``ADDRESS_REQUEST_KEEP``. The address is what a stranger
    typed: it is never logged.
    """

    class Kind(models.TextChoices):
        PASSWORD_RESET = "password_reset", "password reset"
        VERIFICATION_RESEND = "verification_resend", "new verification link"

    kind = models.CharField(max_length=32, choices=Kind.choices)
    address = models.CharField(max_length=254, help_text="The canonical (lower-case) address asked about.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    dispatched_at = models.DateTimeField(help_text="When a message for it was last put on the queue.")
    processed_at = models.DateTimeField(null=True, blank=True, help_text="When a worker looked the address up.")

    objects = AddressRequestQuerySet.as_manager()

    class Meta:
        ordering: ClassVar = ["-created_at", "-id"]
        indexes: ClassVar = [
            # The sweep looks only at the rows no worker has processed yet.
            models.Index(
                fields=["dispatched_at"], name="users_addrreq_unprocessed", condition=Q(processed_at__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        state = "processed" if self.processed_at else "unprocessed"
        return f"{self.kind} request {self.pk} ({state})"


class TotpDevice(models.Model):
    """A user's authenticator app (``users.mfa.totp``): pending until a first code confirms it.

    ``secret`` is the base32 secret encrypted with Fernet (``users.mfa.crypto``), never shown again
    after set-up. ``last_step`` is the last 30 s step accepted: a code of that step or an earlier
    one is refused (a conditional UPDATE moves it forward, so one code works once).
    """

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="totp_device")
    secret = models.BinaryField(editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    last_step = models.BigIntegerField(null=True, blank=True, editable=False)

    def __str__(self) -> str:
        return f"TOTP of {self.user_id} ({'on' if self.confirmed_at else 'pending'})"


class RecoveryCode(models.Model):
    """One single-use recovery code (``users.mfa.recovery_codes``), stored as a keyed hash only."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="recovery_codes")
    code_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["user", "code_hash"], name="users_recoverycode_user_hash_unique")
        ]

    def __str__(self) -> str:
        return f"recovery code of {self.user_id} ({'used' if self.used_at else 'unused'})"


class MfaLoginToken(models.Model):
    """The second step of a log-in (``POST /api/tokens/mfa/``): the password was right, a proof is
    owed. Only the token's SHA-256 is stored; single use, ``MFA_LOGIN_TOKEN_LIFETIME``, dead after
    ``MFA_LOGIN_TOKEN_MAX_FAILURES`` wrong proofs."""

    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveSmallIntegerField(default=0)

    def __str__(self) -> str:
        return f"second log-in step of {self.user_id}"


class Passkey(models.Model):
    """A WebAuthn credential of a user (``users.mfa.passkeys``): the public key the authenticator
    made at registration, and the signature counter it last reported (a counter that goes back
    means a cloned authenticator: the assertion is refused)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="passkeys")
    name = models.CharField(max_length=64)
    credential_id = models.BinaryField(max_length=1023, unique=True, editable=False)
    public_key = models.BinaryField(editable=False)
    sign_count = models.BigIntegerField(default=0, editable=False)
    transports = models.JSONField(default=list, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"passkey {self.name!r} of {self.user_id}"


class WebAuthnChallenge(models.Model):
    """One pending WebAuthn ceremony: the challenge the server sent in the options, spent by the
    first answer that names it (a conditional UPDATE on ``used_at``), dead after five minutes.

    A row rather than the user's session: API clients have no server session, a discoverable
    log-in has no user yet (its ``passkey_token``'s SHA-256 finds the row), and a row lets one user
    run ceremonies on two devices at once without one overwriting the other."""

    class Purpose(models.TextChoices):
        REGISTRATION = "registration", "registration"
        # A known user's passkey as the second factor, one purpose per ceremony: an answer to one
        # ceremony's options is refused by the others (a log-in's challenge is no step-up's).
        LOGIN = "login", "second step of a log-in"
        STEP_UP = "step_up", "step-up before a sensitive change"
        RESET = "reset", "password reset"
        DISCOVERABLE = "discoverable", "discoverable log-in"

    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    user = models.ForeignKey(User, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    challenge = models.BinaryField(max_length=64, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, null=True, blank=True, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.purpose} challenge of {self.user_id}"

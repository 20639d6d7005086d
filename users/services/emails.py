"""Building the emails: one template prefix per kind in ``templates/emails/`` (subject, text, HTML).

Nothing a sign-up typed is echoed to an address that has not proven it is theirs: the link emails
(verification, address change) and any email to an unverified account greet nobody by name and
name no username, so a hostile "name" can't ride in the bank's own email to a stranger's inbox.
"""

from __future__ import annotations

import functools
import importlib
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import urlencode

from anymail.backends.base import BasePayload
from django.conf import settings
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from users import tokens
from users.models import EmailVerification, OutboundEmail, SecurityEvent, User

Kind = OutboundEmail.Kind

TEMPLATE_PREFIX = {
    Kind.VERIFICATION: "verify_email",
    Kind.ACCOUNT_EXISTS: "account_exists",
    Kind.EMAIL_CHANGE: "email_change",
    Kind.EMAIL_CHANGE_NOTICE: "email_change_notice",
    Kind.PASSWORD_RESET: "password_reset",
    Kind.SECURITY_NOTICE: "security_notice",
}

# Who made a change, as a notice says it (never a colleague's username to a customer).
ACTOR_WORDS = {"self": "from your account", "system": "by the bank's systems"}


def verification_link(verification: EmailVerification) -> str:
    code = tokens.make_code(verification.pk, verification.nonce)
    return f"{settings.SITE_URL}/verify-email/?{urlencode({'email_id': verification.pk, 'secret_code': code})}"


def password_reset_link(user: User) -> str:
    """Django's token: dies when the password changes (or the user logs in), and after
    ``PASSWORD_RESET_TIMEOUT``; nothing about it is stored."""
    query = urlencode(
        {"uid": urlsafe_base64_encode(force_bytes(user.pk)), "token": default_token_generator.make_token(user)}
    )
    return f"{settings.SITE_URL}/reset-password/?{query}"


def masked(address: str) -> str:
    """``ada@example.com`` → ``a••@example.com``: enough for its owner to recognise it."""
    local, _, domain = address.partition("@")
    return f"{_hide_label(local)}@{domain}"


def masked_domain(address: str) -> str:
    """``a••@mail.example.com`` → ``a••@m•••.e••••••.com``: an address as a notice prints it. The
    domain is the requester's choice, and its labels can be words (``ignore-this-notice.com``), the
    top-level one too (any 2-63 letters, or an A-label): only a top-level domain of up to three
    letters (every country's, ``com``, ``org``…) shows whole, so its owner recognises the address."""
    local, at, domain = address.partition("@")
    *labels, top = domain.split(".")
    hidden = [_hide_label(label) for label in labels]
    return f"{local}{at}{'.'.join([*hidden, top if len(top) <= 3 else _hide_label(top)])}"


def _hide_label(label: str) -> str:
    return f"{label[:1]}{'•' * min(max(len(label) - 1, 2), 6)}"


def build(email: OutboundEmail) -> EmailMultiAlternatives:
    """The message for one outbound email row (with its ``user`` and ``verification`` loaded)."""
    user = email.user
    # Only the bank's words: no name, username or passkey name an account holds. Whoever holds a
    # session can set those, and would make the notice of their own change tell its owner to
    # ignore it (a hostile review of the emails).
    context: dict[str, object] = {"site_url": settings.SITE_URL, "site_name": settings.SITE_NAME}
    if email.verification is not None:
        context["verify_url"] = verification_link(email.verification)
        context["max_age_hours"] = max(1, settings.EMAIL_VERIFICATION_MAX_AGE // 3600)
    if email.kind == Kind.ACCOUNT_EXISTS:
        # The owner of the address (not the person who typed it into someone else's form).
        context |= {
            "is_email_verified": user.is_email_verified,
            "resend_url": f"{settings.SITE_URL}/verify-email/resend/",
            "reset_url": f"{settings.SITE_URL}/reset-password/",
        }
    elif email.kind == Kind.EMAIL_CHANGE_NOTICE:
        # The address this request asked for (its event keeps it masked); a notice queued before
        # the events did names what is pending now.
        requested = email.event.detail if email.event is not None else ""
        pending = requested or (masked(user.pending_email) if user.pending_email else "")
        context["new_address"] = masked_domain(pending) if pending else ""
    elif email.kind == Kind.SECURITY_NOTICE and email.event is not None:
        from users.services.events import NOTICE_TITLES, USER_TEXT_DETAIL  # the notices' words live with the events

        event = email.event
        context |= {
            "title": NOTICE_TITLES.get(SecurityEvent.Kind(event.kind), event.get_kind_display()),
            "what": event.get_kind_display(),
            # A passkey's name is its owner's text (or a thief's): the notice names the kind only.
            "detail": "" if event.kind in USER_TEXT_DETAIL else event.detail,
            "at": event.at,
            "client_ip": event.client_ip or "unknown",
            "user_agent": event.user_agent,
            "by": ACTOR_WORDS.get(event.actor)
            or ("by a banker" if event.actor.startswith("banker:") else "by a member of our staff"),
            "account_url": f"{settings.SITE_URL}/account/",
        }
    elif email.kind == Kind.PASSWORD_RESET:
        context["reset_url"] = password_reset_link(user)
        context["max_age_minutes"] = max(1, settings.PASSWORD_RESET_TIMEOUT // 60)
    message = render(TEMPLATE_PREFIX[Kind(email.kind)], context, to=email.recipient, message_id=email.message_id)
    if _backend_sends_metadata(settings.EMAIL_BACKEND):
        message.metadata = {FEEDBACK_METADATA: email.feedback_ref}  # type: ignore[attr-defined]
    return message


# The metadata an anymail backend sends with each email (its Message-ID without the domain): the
# providers whose events name an email by their own id only (Postmark, Resend) echo it back, so an
# event finds an email whose provider id was never recorded — a worker that died after the provider
# accepted it (users.services.feedback.email_for).
FEEDBACK_METADATA = "simplebank_email"


@functools.cache
def _backend_sends_metadata(backend: str) -> bool:
    """Whether ``EMAIL_BACKEND`` is an anymail backend that carries metadata (SMTP has nothing to
    carry it in; anymail's Postal backend refuses it rather than drop it)."""
    module_name = backend.rpartition(".")[0]
    if not module_name.startswith("anymail."):
        return False
    module = importlib.import_module(module_name)
    return any(
        isinstance(found, type) and issubclass(found, BasePayload) and "set_metadata" in vars(found)
        for found in vars(module).values()
    )


def render(prefix: str, context: dict, *, to: str, message_id: str) -> EmailMultiAlternatives:
    subject = " ".join(render_to_string(f"emails/{prefix}_subject.txt", context).split())
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string(f"emails/{prefix}_message.txt", context),
        to=[to],
        headers={
            "Message-ID": message_id,
            # RFC 3834: an automatic email, so auto-responders and ticket systems do not answer it.
            "Auto-Submitted": "auto-generated",
            # In UTC with its zone said (Django's default writes "-0000": "zone unknown").
            "Date": format_datetime(datetime.now(UTC)),
        },
    )
    message.attach_alternative(render_to_string(f"emails/{prefix}_message.html", context), "text/html")
    return message


def warm_up() -> None:
    """Build each kind of email once for a made-up user, so a worker's first real email is quick.

    The first render loads and compiles the templates (~50 ms here); a worker process does it
    at boot instead of on the first sign-up it serves. Nothing is saved, read or sent.
    """
    user = User(pk=1, username="warm-up", full_name="Warm Up", email="warm-up@example.invalid")
    user.set_unusable_password()
    now = timezone.now()
    verification = EmailVerification(
        pk=1, user=user, email=user.email, nonce="warm-up", expires_at=now + timedelta(days=1)
    )
    event = SecurityEvent(pk=1, user=user, kind=SecurityEvent.Kind.PASSWORD_CHANGED, at=now, actor="self")
    for kind in TEMPLATE_PREFIX:
        email = OutboundEmail(pk=1, kind=kind, user=user, recipient=user.email, expires_at=now)
        email.verification = verification if kind in (Kind.VERIFICATION, Kind.EMAIL_CHANGE) else None
        email.event = event if kind == Kind.SECURITY_NOTICE else None
        build(email).message().as_bytes()

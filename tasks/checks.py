from email.utils import parseaddr

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.utils.module_loading import import_string

from tasks import retry_policy


@register()
def retries_fit_in_link_lifetime(app_configs, **kwargs):
    errors: list[CheckMessage] = []
    span_s = retry_policy.worst_case_retry_span_ms() / 1000
    if span_s >= settings.EMAIL_VERIFICATION_MAX_AGE:
        errors.append(
            Error(
                f"send_verify_email may still retry {span_s:.0f}s after sign-up, but links expire "
                f"after EMAIL_VERIFICATION_MAX_AGE={settings.EMAIL_VERIFICATION_MAX_AGE}s.",
                hint="Raise EMAIL_VERIFICATION_MAX_AGE or lower VERIFY_EMAIL_MAX_RETRIES / the backoff settings.",
                id="tasks.E001",
            )
        )
    if settings.VERIFY_EMAIL_RETRY_STALL_AFTER * 1000 <= retry_policy.MAX_BACKOFF_MS:
        errors.append(
            Error(
                "VERIFY_EMAIL_RETRY_STALL_AFTER must exceed the longest retry backoff, or the sweep "
                "re-sends emails whose Dramatiq retry is merely waiting.",
                id="tasks.E002",
            )
        )
    if settings.VERIFY_EMAIL_MAX_ATTEMPTS <= retry_policy.MAX_RETRIES:
        errors.append(
            Error(
                "VERIFY_EMAIL_MAX_ATTEMPTS must exceed VERIFY_EMAIL_MAX_RETRIES (one first attempt plus retries).",
                id="tasks.E003",
            )
        )
    longest_send_ms = retry_policy.TIME_LIMIT_MS + settings.EMAIL_TIMEOUT * 1000
    if longest_send_ms >= settings.VERIFY_EMAIL_CLAIM_TIMEOUT * 1000:
        errors.append(
            Warning(
                f"VERIFY_EMAIL_CLAIM_TIMEOUT={settings.VERIFY_EMAIL_CLAIM_TIMEOUT}s is not longer than a send "
                f"may take ({longest_send_ms / 1000:.0f}s): a slow send's claim could be taken over and the "
                "email sent twice.",
                id="tasks.W004",
            )
        )
    return errors


@register()
def mail_can_be_sent(app_configs, **kwargs):
    """The web answers a sign-up 201 whatever these say; only the worker's sends would fail, each
    email retried for hours before anyone looked (a review)."""
    errors: list[CheckMessage] = []
    try:
        import_string(settings.EMAIL_BACKEND)
    except ImportError as exc:
        errors.append(Error(f"EMAIL_BACKEND={settings.EMAIL_BACKEND!r} cannot be imported: {exc}", id="tasks.E005"))
    if "@" not in parseaddr(settings.DEFAULT_FROM_EMAIL)[1]:
        errors.append(
            Error(
                f"DEFAULT_FROM_EMAIL={settings.DEFAULT_FROM_EMAIL!r} holds no address "
                "(e.g. noreply@bank.example.com or 'Simple Bank <noreply@bank.example.com>').",
                id="tasks.E006",
            )
        )
    return errors

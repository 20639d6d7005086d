from django.conf import settings
from django.core.checks import Error, register

from tasks import retry_policy


@register()
def retries_fit_in_link_lifetime(app_configs, **kwargs):
    span_s = retry_policy.worst_case_retry_span_ms() / 1000
    if span_s >= settings.EMAIL_VERIFICATION_MAX_AGE:
        return [
            Error(
                f"send_verify_email may still retry {span_s:.0f}s after sign-up, but links expire "
                f"after EMAIL_VERIFICATION_MAX_AGE={settings.EMAIL_VERIFICATION_MAX_AGE}s.",
                hint="Raise EMAIL_VERIFICATION_MAX_AGE or shorten the retry policy in tasks/retry_policy.py.",
                id="tasks.E001",
            )
        ]
    return []

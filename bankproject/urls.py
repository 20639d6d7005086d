import functools
import logging
from collections.abc import Callable

from anymail import urls as anymail_urls
from anymail.exceptions import AnymailAPIError, AnymailWebhookValidationFailure
from anymail.utils import get_request_basic_auth
from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError as BotoClientError
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import ImproperlyConfigured
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.urls import URLPattern, include, path
from django.utils.crypto import constant_time_compare

from bankproject import api_docs, health, metrics
from tasks.admin_views import DeadLettersView
from users import webhooks
from users.admin import admin_login, own_password_change, queue_overview

logger = logging.getLogger(__name__)

admin.site.index_template = "admin/simplebank_index.html"  # adds the queue overview link
admin.site.site_header = "Simple Bank operations"  # on every admin page, the log-in page too
admin.site.site_title = "Simple Bank operations"  # the <title> suffix
admin.site.index_title = "Operations and accounts"

# Requeueing the critical queue's dead letters retries emails: the power of the email list's
# "Retry failed emails" action, so the same permission (superusers have it; other staff are given it).
dead_letters_view = DeadLettersView.as_view(permission="users.change_outboundemail")

# Under /api/ even what never reaches a view answers in the API's JSON shape (bankproject.api_errors).
handler400 = "bankproject.api_errors.bad_request"
handler404 = "bankproject.api_errors.not_found"
handler500 = "bankproject.api_errors.server_error"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.public, name="metrics"),
    path("metrics/operator", metrics.operator, name="metrics-operator"),
    path("admin/queues/", admin.site.admin_view(queue_overview), name="admin-queue-overview"),
    path("admin/queues/dead-letters/", admin.site.admin_view(dead_letters_view), name="admin-dead-letters"),
    path("admin/login/", admin_login, name="admin-login"),  # throttled, then Django's
    # Django's own password form asks for no second factor and counts no wrong password: /account/.
    path("admin/password_change/", own_password_change),
    path("admin/password_change/done/", own_password_change),
    path("admin/", admin.site.urls),
    path("api/schema/", api_docs.SchemaView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file, so the CSP needs no inline script.
    path("api/docs/", api_docs.SwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("", include("users.urls")),
]


# What anymail's parsers raise on a body that is not the provider's event (no JSON, a list, a
# field of the wrong type, an SNS message of no known type): the sender's fault, a 400 — a 500
# would have the provider retry it.
# (Our own failures to record an event are users.errors.FeedbackFailed: a 500, retried.)
# RecursionError: JSON nested deep enough to exhaust the parser (some validators parse before the
# basic auth is checked).
UNREADABLE = (
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    ArithmeticError,
    RecursionError,
    AnymailAPIError,
)


def _basic_auth_check(request: HttpRequest) -> None:
    """anymail's basic-auth check (``AnymailBasicAuthMixin``), for a request its view never saw."""
    secrets = settings.ANYMAIL["WEBHOOK_SECRET"]  # a list (our settings), or one string (anymail takes both)
    sent = get_request_basic_auth(request)
    if not any(constant_time_compare(sent, secret) for secret in ([secrets] if isinstance(secrets, str) else secrets)):
        raise AnymailWebhookValidationFailure("Missing or invalid basic auth in an unconfigured webhook")


def _behind_the_secret(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """anymail's webhook, answered only once ANYMAIL_WEBHOOK_SECRET is set: without it anymail
    would take anyone's events (with a warning), and anyone could suppress an address. A body
    anymail cannot read (past the secret) is a 400, never a 500."""

    @functools.wraps(view)
    def guarded(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if not settings.ANYMAIL.get("WEBHOOK_SECRET"):
            raise Http404("delivery feedback is not configured")
        try:
            return view(request, *args, **kwargs)
        except UNREADABLE as exc:
            logger.warning("delivery feedback: a body that is no provider event", extra={"error": type(exc).__name__})
            return HttpResponseBadRequest("Not an event this webhook can read.", content_type="text/plain")
        except (BotoCoreError, BotoClientError) as exc:
            # Amazon SNS's subscription confirmation (anymail confirms it with AWS credentials):
            # ours to fix, not the sender's; said once in the log, not as a traceback per retry.
            logger.error(
                "delivery feedback: Amazon SNS subscription not confirmed (AWS credentials or permissions); "
                "confirm it in the SNS console",
                extra={"error": type(exc).__name__},
            )
            return HttpResponse("The subscription could not be confirmed.", status=503, content_type="text/plain")
        except ImproperlyConfigured as exc:
            # e.g. Mailgun's events without ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY: anymail can't build the
            # view, so its basic auth never ran. Checked here first: a stranger gets anymail's 400 and
            # learns nothing; the provider gets a 503 and sends the event again once it is set.
            _basic_auth_check(request)
            logger.error("delivery feedback: this provider's webhook is not configured: %s", exc)
            return HttpResponse("This webhook is not configured.", status=503, content_type="text/plain")

    return guarded


# /anymail/<esp>/tracking/ of the providers we document: anymail's own views. No inbound mail and
# no other provider's route (unconfigured, anymail answers them with a 500).
TRACKED = {f"{esp}_tracking_webhook" for esp in ("mailgun", "postmark", "amazon_ses", "resend")}
OURS = {"mailgun_tracking_webhook": webhooks.MailgunTrackingWebhookView.as_view()}  # + replay checks
urlpatterns += [
    path(
        "anymail/",
        include(
            [
                URLPattern(p.pattern, _behind_the_secret(OURS.get(p.name, p.callback)), p.default_args, p.name)
                for p in anymail_urls.urlpatterns
                if p.name in TRACKED
            ]
        ),
    ),
]

"""The admin's dead-letters page: a Dramatiq queue's dead letters, listed with checkboxes;
"Requeue selected" leads to a confirmation page, and only the confirmed POST requeues them
(``tasks.dead_letters.requeue``: through the handler an app registered for the actor, or else
re-enqueued with its retries reset), then redirects back with what each one did.

Plumbing, so it knows nothing of users: the project's URLconf wraps it in ``admin.site.admin_view``
(staff only, CSRF, never cached) and names the permission it takes (``permission=...``).
Only the ids, actor, arguments (the messages carry ids only), time of death and the last line
of the traceback are shown.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

import dramatiq
from django.contrib import admin, messages
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views import View
from dramatiq.brokers.redis import RedisBroker
from redis.exceptions import RedisError

from tasks import dead_letters, retry_policy

logger = logging.getLogger(__name__)

SELECTED = "_selected_action"  # the name the admin's changelists give their checkboxes
SHOWN_AT_MOST = 500  # below DATA_UPLOAD_MAX_NUMBER_FIELDS, so selecting them all still posts
ARGS_SHOWN = 120
ERROR_SHOWN = 200
DETAILED_IN_MESSAGE = 10


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Row:
    message_id: str
    actor: str
    args: str
    died_at: datetime
    error: str
    handled_by_app: bool

    @classmethod
    def of(cls, entry: dead_letters.DeadLetter) -> Row:
        message = entry.message
        arguments = [repr(a) for a in message.args] + [f"{k}={v!r}" for k, v in message.kwargs.items()]
        return cls(
            message_id=message.message_id,
            actor=message.actor_name,
            args=_shorten(", ".join(arguments), ARGS_SHOWN),
            died_at=entry.died_at,
            error=_shorten(entry.error, ERROR_SHOWN),
            handled_by_app=dead_letters.has_handler(message.actor_name),
        )

    @property
    def call(self) -> str:
        return f"{self.actor}({self.args})"


class DeadLettersView(View):
    http_method_names = ["get", "post"]
    permission = ""  # set by the URLconf: as_view(permission="app.codename")
    template_name = "admin/tasks/dead_letters.html"
    confirm_template_name = "admin/tasks/dead_letters_confirm.html"

    def dispatch(self, request: HttpRequest, *args, **kwargs) -> HttpResponseBase:
        if not self.permission:
            raise ImproperlyConfigured("DeadLettersView.as_view() needs permission=")
        if not request.user.has_perm(self.permission):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    # --- GET: the list -------------------------------------------------------------------------
    def get(self, request: HttpRequest) -> HttpResponse:
        queue = self._queue(request)
        broker = dramatiq.get_broker()
        context = self._context(request, queue, title=f"Dead letters of the {queue} queue")
        if not isinstance(broker, RedisBroker):
            context["broker_name"] = type(broker).__name__
            return TemplateResponse(request, self.template_name, context)
        try:
            entries = dead_letters.dead_letter_entries(broker, queue)
        except (RedisError, OSError):
            logger.warning("dead letters: Redis unreachable")
            context["redis_down"] = True
            return TemplateResponse(request, self.template_name, context)
        context["total"] = len(entries)
        context["rows"] = [Row.of(entry) for entry in entries[:SHOWN_AT_MOST]]
        return TemplateResponse(request, self.template_name, context)

    # --- POST: confirm, then requeue -------------------------------------------------------------
    def post(self, request: HttpRequest) -> HttpResponse:
        queue = self._queue(request)
        back = HttpResponseRedirect(self._url(queue))
        broker = dramatiq.get_broker()
        if not isinstance(broker, RedisBroker):
            return back  # the list says why
        selected = set(request.POST.getlist(SELECTED))
        if not selected:
            messages.warning(request, "Select the dead letters to requeue: none was requeued.")
            return back
        try:
            if request.POST.get("post") != "yes":
                return self._confirm(request, broker, queue, selected) or back
            done = dead_letters.requeue(broker, queue, message_ids=selected)
        except (RedisError, OSError):
            logger.warning("dead letters: Redis unreachable")
            messages.error(request, "The broker's Redis does not answer: nothing was requeued.")
            return back
        if done:
            messages.success(request, self._summary(queue, done))
        if missing := len(selected) - len(done):
            messages.warning(
                request,
                f"{missing} of the selected dead letters {'was' if missing == 1 else 'were'} no longer there "
                "(requeued by someone else, or expired).",
            )
        return back

    def _confirm(
        self, request: HttpRequest, broker: RedisBroker, queue: str, selected: set[str]
    ) -> HttpResponse | None:
        rows = [Row.of(e) for e in dead_letters.dead_letter_entries(broker, queue) if e.message.message_id in selected]
        if not rows:
            messages.warning(request, "None of the selected dead letters is still there: none was requeued.")
            return None
        n = len(rows)
        context = self._context(request, queue, title=f"Requeue {n} dead letter{'' if n == 1 else 's'}?")
        context["rows"] = rows
        return TemplateResponse(request, self.confirm_template_name, context)

    # --- helpers ---------------------------------------------------------------------------------
    def _queue(self, request: HttpRequest) -> str:
        """The queue named in the query string (default: the emails' queue); only a known one."""
        queue = request.GET.get("queue", retry_policy.QUEUE)
        known = set(dramatiq.get_broker().get_declared_queues()) | {retry_policy.QUEUE, retry_policy.MAINTENANCE_QUEUE}
        if queue not in known:
            raise Http404("no such queue")
        return queue

    def _url(self, queue: str) -> str:
        return f"{reverse('admin-dead-letters')}?{urlencode({'queue': queue})}"

    def _context(self, request: HttpRequest, queue: str, *, title: str) -> dict:
        return {
            **admin.site.each_context(request),
            "title": title,
            "queue": queue,
            "list_url": self._url(queue),
            "selected_name": SELECTED,
        }

    def _summary(self, queue: str, done: list[dead_letters.Requeued]) -> str:
        n = len(done)
        details = [
            f"{item.actor_name}({_shorten(', '.join(map(repr, item.args)), ARGS_SHOWN)}): {item.how}"
            for item in done[:DETAILED_IN_MESSAGE]
        ]
        if rest := done[DETAILED_IN_MESSAGE:]:
            counts = Counter(item.how for item in rest)
            details.append(f"and {len(rest)} more ({', '.join(f'{how}: {c}' for how, c in counts.items())})")
        return f"Requeued {n} dead letter{'' if n == 1 else 's'} of the {queue} queue: {'; '.join(details)}."

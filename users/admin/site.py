"""The admin's own pages: the queue overview, one's own password (on /account/), the log-in."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext
from django.views.decorators.cache import never_cache

from tasks.metrics import queue_stats
from users.forms import AdminLoginForm
from users.metrics import email_stats
from users.models import (
    OutboundEmail,
)

Kind, State = OutboundEmail.Kind, OutboundEmail.State


def queue_overview(request: HttpRequest) -> HttpResponse:
    by_kind_state, oldest_age, snapshot_age = email_stats(compute_missing=True)
    context = {
        **admin.site.each_context(request),
        "title": "Queues and emails",
        "queues": queue_stats(),
        "states": State.values,
        "by_kind": [(kind, [(state, by_kind_state[kind, state]) for state in State.values]) for kind in Kind.values],
        "oldest_age": oldest_age,
        "snapshot_age": snapshot_age,
    }
    return TemplateResponse(request, "admin/queue_overview.html", context)


def own_password_change(request: HttpRequest) -> HttpResponseRedirect:
    """One's own password, from anywhere in the admin (the change form's link, the header's
    ``/admin/password_change/``): on ``/account/``, where it needs the current password and the
    second factor and counts a wrong one as a failed log-in — Django's admin form asks for neither."""
    if request.user.is_authenticated:
        messages.warning(request, "Change your own password on your account page.")
    return HttpResponseRedirect(reverse("account") + "#password-form")


@never_cache
def admin_login(request: HttpRequest, extra_context=None) -> HttpResponseBase:
    """The admin's log-in: Django's ``AdminSite.login`` with the log-in pages' view, so the same
    failed-log-in limit per client address applies and staff with a second factor go on to
    ``/login/verify/`` (then back to ``next``, the admin's index by default)."""
    from users.account_views import SecondStepLoginView

    if request.method == "GET" and admin.site.has_permission(request):
        return HttpResponseRedirect(reverse("admin:index"))
    context = {
        **admin.site.each_context(request),
        "title": gettext("Log in"),
        "subtitle": None,
        "app_path": request.get_full_path(),
        "username": request.user.get_username(),
    }
    if REDIRECT_FIELD_NAME not in request.GET and REDIRECT_FIELD_NAME not in request.POST:
        context[REDIRECT_FIELD_NAME] = reverse("admin:index")
    context.update(extra_context or {})
    request.current_app = admin.site.name
    view = SecondStepLoginView.as_view(
        extra_context=context,
        authentication_form=AdminLoginForm,
        template_name=admin.site.login_template or "admin/login.html",
        next_page=reverse("admin:index"),
    )
    return view(request)

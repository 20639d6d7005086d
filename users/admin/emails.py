"""Every email the service sent or owes, with what the mail provider said; suppressions;
verification links (never their secret); address requests."""

from __future__ import annotations

from typing import cast

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from users import identity
from users.admin.base import (
    FastListMixin,
    HistoryMixin,
    LargeTablePaginator,
    ReadOnlyInline,
    SecretLookupsRefusedMixin,
    SelectionCheckMixin,
    ViewOnlyMixin,
)
from users.models import (
    AddressRequest,
    DeliveryEvent,
    EmailVerification,
    OutboundEmail,
    Suppression,
    User,
)
from users.services import delivery, feedback

Kind, State = OutboundEmail.Kind, OutboundEmail.State


class DeliveryEventInline(ReadOnlyInline):
    """What the mail provider said about the email (its tracking webhook), oldest first."""

    model = DeliveryEvent
    fields = ("received_at", "occurred_at", "esp", "event_type", "reason", "description")
    readonly_fields = fields
    verbose_name = "provider event"
    verbose_name_plural = "what the mail provider reported"


@admin.register(OutboundEmail)
class OutboundEmailAdmin(SecretLookupsRefusedMixin, SelectionCheckMixin, HistoryMixin, FastListMixin, admin.ModelAdmin):
    def owed(self, obj: OutboundEmail) -> bool:
        return obj.state in (OutboundEmail.State.PENDING, OutboundEmail.State.SENDING)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        canonical = identity.canonical_email(term)
        return (queryset.filter(recipient_canonical=canonical) if canonical else queryset.none()), False

    list_display = [
        "id",
        "kind",
        "user_link",
        "recipient",
        "state",
        "attempts",
        "last_error_short",
        "created_at",
        "sent_at",
        "expires_at",
    ]
    list_filter = ["state", "kind", "created_at"]
    search_fields = ["recipient_canonical"]
    search_help_text = "An email address (exactly)."
    list_select_related = ["user"]
    show_full_result_count = False
    paginator = LargeTablePaginator
    list_per_page = 50  # operators search and filter; each row costs ~1 ms to render
    fields = (
        "kind",
        "user",
        "recipient",
        "verification",
        "state",
        "attempts",
        "last_error",
        "message_id",
        "created_at",
        "expires_at",
        "dispatched_at",
        "claimed_at",
        "sent_at",
        "provider_message_id",
        "delivered_at",
        "timeline",
    )
    readonly_fields = fields
    inlines = [DeliveryEventInline]
    actions = ["retry_failed"]

    @admin.display(description="timeline")
    def timeline(self, obj: OutboundEmail) -> str:
        """Queued, sent, then what the provider reported — each with its time, oldest first."""
        steps = [(obj.created_at, "queued"), (obj.sent_at, "sent (the server said 250)")]
        steps += [(e.occurred_at or e.received_at, _feedback_words(e)) for e in obj.feedback.all()]
        if obj.state == State.SUPPRESSED:
            steps.append((obj.claimed_at, "not sent: the address is suppressed"))
        lines = sorted(((at, what) for at, what in steps if at is not None), key=lambda line: line[0])
        items = format_html_join(
            "",
            '<li><time datetime="{}">{}</time> {}</li>',
            ((at.isoformat(), f"{at:%Y-%m-%d %H:%M:%S}", what) for at, what in lines),
        )
        return format_html('<ol class="timeline">{}</ol>', items)

    @admin.display(description="user", ordering="user__username")
    def user_link(self, obj: OutboundEmail) -> str:
        url = reverse("admin:users_user_change", args=[obj.user_id])
        return format_html('<a href="{}">{}</a>', url, obj.user.username)

    @admin.display(description="last error")
    def last_error_short(self, obj: OutboundEmail) -> str:
        return obj.last_error if len(obj.last_error) <= 80 else obj.last_error[:79] + "…"

    def has_retry_permission(self, request) -> bool:
        """Who may retry: staff with the "change email" permission (the form itself stays read-only)."""
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    @admin.action(description="Retry failed emails (same link)", permissions=["retry"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[OutboundEmail]) -> None:
        selected = queryset.count()  # before the retry: on a list filtered by "failed" they leave it
        ids = list(queryset.filter(state=State.FAILED).values_list("pk", flat=True))
        retried = sum(delivery.email_retry(email_id=pk) for pk in ids)
        self.message_user(
            request,
            f"Queued {retried} failed email(s) again; {selected - retried} skipped "
            "(not failed, expired, or no longer wanted: the address changed or is verified).",
            messages.SUCCESS,
        )


def _feedback_words(event: DeliveryEvent) -> str:
    said = f"{event.event_type} ({event.esp})"
    detail = event.description or event.reason
    return f"{said}: {detail}" if detail else said


@admin.register(Suppression)
class SuppressionAdmin(SecretLookupsRefusedMixin, SelectionCheckMixin, admin.ModelAdmin):
    """Addresses nothing is sent to after a bounce, rejection or complaint; staff lift them."""

    list_display = ["address", "reason", "created_at", "lifted_at", "lifted_by", "email_link"]
    list_filter = [("lifted_at", admin.EmptyFieldListFilter), "reason", "created_at"]
    search_fields = ["address"]
    search_help_text = "An email address (lower case)."
    fields = ("address", "reason", "detail", "email", "created_at", "lifted_at", "lifted_by")
    readonly_fields = fields
    actions = ["lift"]

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip().lower()
        return (queryset.filter(address=term) if term else queryset), False

    @admin.display(description="email")
    def email_link(self, obj: Suppression) -> str:
        if obj.email_id is None:
            return "—"
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:users_outboundemail_change", args=[obj.email_id]), obj.email_id
        )

    def has_add_permission(self, request):
        return False  # only a provider's report suppresses

    def has_delete_permission(self, request, obj=None):
        return False  # lifted, never forgotten

    def has_lift_permission(self, request) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    @admin.action(description="Lift the suppression (the address can be mailed again)", permissions=["lift"])
    def lift(self, request: HttpRequest, queryset: QuerySet[Suppression]) -> None:
        lifted = sum(
            feedback.suppression_lift(suppression=s, by=cast("User", request.user))
            for s in queryset.filter(lifted_at__isnull=True)
        )
        self.message_user(request, f"Lifted {lifted} suppression(s).", messages.SUCCESS)


@admin.register(EmailVerification)
class EmailVerificationAdmin(SecretLookupsRefusedMixin, SelectionCheckMixin, HistoryMixin, admin.ModelAdmin):
    list_display = ["id", "user", "email", "purpose", "state", "created_at", "expires_at", "verified_at"]
    list_filter = ["state", "purpose"]
    search_fields = ["email", "user__username"]
    list_select_related = ["user"]
    # The nonce is deliberately absent: with the SECRET_KEY it would give the link away.
    fields = ("user", "email", "purpose", "state", "created_at", "expires_at", "verified_at")
    readonly_fields = fields


@admin.register(AddressRequest)
class AddressRequestAdmin(
    SecretLookupsRefusedMixin, ViewOnlyMixin, SelectionCheckMixin, FastListMixin, admin.ModelAdmin
):
    """Password-reset and resend requests, read-only: whether the worker has looked each one up.
    The address is what a stranger typed into a public form; it shows on the request's own page
    only, and is not searchable — nor a filter of the list (``?address=`` would tell whether a
    given person asked for a reset). The sweep deletes requests after a week."""

    unfiltered_columns = frozenset({"address"})
    list_display = ["id", "kind", "created_at", "dispatched_at", "processed_at"]
    list_filter = ["kind"]
    show_full_result_count = False
    paginator = LargeTablePaginator
    list_per_page = 50
    fields = ("kind", "address", "created_at", "dispatched_at", "processed_at")
    readonly_fields = fields

"""The operator's admin: users with the state of their verification email, every email the
service sent or owes, verification links (never their secret), and the queue overview."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.admin.utils import unquote
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.core.exceptions import ValidationError
from django.core.paginator import Page, Paginator
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseBase, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext
from django.views.decorators.cache import never_cache

from tasks.metrics import queue_stats
from users import identity, policies
from users.metrics import email_stats
from users.mfa import flows as mfa
from users.models import (
    AddressRequest,
    DeliveryEvent,
    EmailVerification,
    LoginSession,
    OutboundEmail,
    SecurityEvent,
    Suppression,
    User,
)
from users.services import accounts, delivery, events, feedback, sessions, signup

Kind, State = OutboundEmail.Kind, OutboundEmail.State

VERIFIED = "verified"


class VerificationStateFilter(admin.SimpleListFilter):
    """Users by the state of their latest verification email: a range of the index on the column
    the database keeps for it (``User.verification_state``), so "failed" among a million users
    reads the few thousand entries it shows and counts, newest first."""

    title = "verification email"
    parameter_name = "verification_state"

    def lookups(self, request, model_admin):
        return [*State.choices, (VERIFIED, "verified")]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if value == VERIFIED:
            return queryset.filter(is_email_verified=True)
        if value not in State.values:
            return queryset.none()
        return queryset.filter(verification_state=value, is_email_verified=False)


class LargeTablePaginator(Paginator):
    """A paginator for tables of millions of rows, as the admin lists them.

    - The count of an unfiltered list is PostgreSQL's estimate (``pg_class.reltuples``, kept by
      autovacuum), not a ``COUNT(*)`` over every row; a filtered list is counted exactly.
    - A deep page selects its ids first (an index-only scan over the ordering's index skips the
      rows before it) and then loads only those rows, so nothing is computed for skipped rows.
    """

    ESTIMATE_ABOVE = 100_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if isinstance(queryset, QuerySet) and not queryset.query.where and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [queryset.model._meta.db_table]
                )
                row = cursor.fetchone()
            if row and row[0] > self.ESTIMATE_ABOVE:
                return int(row[0])
        return super().count

    def page(self, number):
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        queryset = self.object_list
        if not isinstance(queryset, QuerySet) or bottom < 10 * self.per_page:
            return super().page(number)
        ids = list(queryset.values_list("pk", flat=True)[bottom : bottom + self.per_page])
        rows = {row.pk: row for row in queryset.model._default_manager.filter(pk__in=ids)}
        return Page([rows[pk] for pk in ids if pk in rows], number, self)


class OwnersFirstDeleteMixin(admin.ModelAdmin):
    """Deleting from here locks the users concerned first (in id order), then deletes: the order
    every writer of emails takes (users.services.delivery), since deleting a verification email
    updates its user's ``verification_state`` (migration 0007)."""

    owner_field = "user_id"

    def _lock_owners(self, user_ids) -> None:
        """``user_ids``: a list, or a QuerySet of them (one statement either way)."""
        list(User.objects.select_for_update().filter(pk__in=user_ids).order_by("pk").values_list("pk", flat=True))

    def delete_model(self, request, obj):
        with transaction.atomic():
            self._lock_owners([getattr(obj, self.owner_field)])
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            self._lock_owners(queryset.values(self.owner_field))
            super().delete_queryset(request, queryset)


class HistoryMixin(OwnersFirstDeleteMixin):
    """A record the service keeps (an email, a link): staff read it, act on it through the actions,
    and never save it back from a form (which would write the state it was loaded with)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class SelectionCheckMixin:
    """A selection for an action is ids of this model, or a ``400`` before the action runs (Django
    hands the raw values to the query: "abc" for an integer id, "x" for a UUID)."""

    def response_action(self, request, queryset):
        pk = self.model._meta.pk  # type: ignore[attr-defined]
        try:
            for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
                pk.to_python(value)
        except ValidationError:
            return HttpResponseBadRequest("That selection is not valid.\n", content_type="text/plain; charset=utf-8")
        return super().response_action(request, queryset)  # type: ignore[misc]


class SuperuserBulkDeleteMixin:
    """Django's "Delete selected" asks ``has_delete_permission`` with no object: a per-object rule
    (``policies.can_admin_change``) would not hold there, so the bulk delete is a superuser's only."""

    def get_actions(self, request):
        actions = super().get_actions(request)  # type: ignore[misc]
        if not request.user.is_superuser:
            actions.pop("delete_selected", None)
        return actions


class FastListMixin:
    """The row checkbox of Django's admin lists, without rendering a form widget per row.

    ``ModelAdmin.action_checkbox`` renders a ``CheckboxInput`` through the form renderer for every
    row: ~0.6 ms a row here, a third of a list page. This writes the same markup directly.
    """

    def action_checkbox(self, obj):
        label = format_html("Select this object for an action - {}", str(obj))
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            str(obj.pk),
            label,
        )

    action_checkbox.short_description = mark_safe('<input type="checkbox" id="action-toggle">')  # type: ignore[attr-defined]


class ReadOnlyInline(admin.TabularInline):
    """History shown on a user's page: nothing is added or deleted from here."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class OutboundEmailInline(ReadOnlyInline):
    model = OutboundEmail
    fk_name = "user"
    show_change_link = True
    fields = ("id", "kind", "recipient", "state", "attempts", "last_error", "created_at", "sent_at", "expires_at")
    readonly_fields = fields
    ordering = ["-created_at", "-id"]
    verbose_name_plural = "emails"


class DeliveryEventInline(ReadOnlyInline):
    """What the mail provider said about the email (its tracking webhook), oldest first."""

    model = DeliveryEvent
    fields = ("received_at", "occurred_at", "esp", "event_type", "reason", "description")
    readonly_fields = fields
    verbose_name = "provider event"
    verbose_name_plural = "what the mail provider reported"


class EmailVerificationInline(ReadOnlyInline):
    model = EmailVerification
    fields = ("id", "email", "purpose", "state", "created_at", "expires_at", "verified_at")
    readonly_fields = fields
    ordering = ["-created_at"]
    verbose_name_plural = "verification links"


class LoginSessionInline(ReadOnlyInline):
    model = LoginSession
    show_change_link = True
    fields = (
        "id",
        "kind",
        "created_at",
        "last_used_at",
        "expires_at",
        "client_ip",
        "user_agent",
        "revoked_at",
        "revoked_reason",
        "blocked_at",
    )
    readonly_fields = fields
    ordering = ["-created_at"]
    verbose_name_plural = "log-in sessions"


class ChangeForm(UserChangeForm):
    class Meta(UserChangeForm.Meta):  # type: ignore[name-defined]
        model = User
        fields = "__all__"


class CreationForm(AdminUserCreationForm):
    class Meta(AdminUserCreationForm.Meta):  # type: ignore[name-defined]
        model = User
        fields = ["username", "email", "full_name"]


NOT_YOURS = "not yours to act on (other staff or a superuser)"


def _theirs(request: HttpRequest, users: Iterable[User]) -> list[User]:
    """Of ``users``, those the member of staff asking may act on (``policies.can_admin_change``):
    an action is no way around the change form's rule."""
    staff = cast("User", request.user)
    return [user for user in users if policies.can_admin_change(staff, user)]


@admin.action(description="Send a new verification email", permissions=["change"])
def resend_verification(modeladmin, request: HttpRequest, queryset: QuerySet[User]) -> None:
    allowed = _theirs(request, queryset)
    sent = sum(1 for user in allowed if signup.verification_resend(user=user))
    refused = queryset.count() - len(allowed)
    modeladmin.message_user(
        request,
        f"Queued {sent} verification email(s); {len(allowed) - sent} already verified"
        + (f"; {refused} {NOT_YOURS}." if refused else "."),
        messages.WARNING if refused else messages.SUCCESS,
    )


@admin.action(description="Reset the second factors (the customer lost them)", permissions=["change"])
def reset_second_factors(modeladmin, request: HttpRequest, queryset: QuerySet[User]) -> None:
    """Staff remove every factor of the selected users — after checking who is asking by other
    means. Each reset is a security event naming the staff member, and the user is mailed a notice.
    Only of users they may change (``policies.can_admin_change``: never a superuser or other staff
    for non-superusers), and never their own: that goes through /account/security/'s step-up."""
    staff = cast("User", request.user)
    allowed = [user for user in _theirs(request, queryset) if user.pk != staff.pk]
    reset = sum(1 for user in allowed if mfa.factors_reset_by_staff(user=user))
    refused = queryset.count() - len(allowed)
    modeladmin.message_user(
        request,
        f"Reset the second factors of {reset} user(s); {len(allowed) - reset} had none"
        + (f"; {refused} not yours to reset (yourself, other staff or a superuser)." if refused else "."),
        messages.WARNING if refused else messages.SUCCESS,
    )


@admin.register(User)
class UserAdmin(SelectionCheckMixin, SuperuserBulkDeleteMixin, OwnersFirstDeleteMixin, FastListMixin, DjangoUserAdmin):
    owner_field = "pk"
    form = ChangeForm
    add_form = CreationForm
    list_display = [
        "username",
        "email",
        "full_name",
        "is_email_verified",
        "verification_email",
        "created_at",
        "is_staff",
    ]
    list_filter = ["is_email_verified", VerificationStateFilter, "is_staff", "is_active", "created_at"]
    # How staff search (see get_search_results): an address exactly, a username by its start, a
    # name anywhere in it (a trigram index backs that one).
    search_fields = ["username_canonical", "email_canonical", "full_name"]
    search_help_text = "An email address (exactly), the start of a username, or part of a name."
    ordering = ["-created_at", "-id"]
    show_full_result_count = False
    paginator = LargeTablePaginator
    list_per_page = 50  # operators search and filter; each row costs ~1 ms to render
    readonly_fields = [
        "created_at",
        "password_changed_at",
        "last_login",
        "pending_email",
        "security_events",
        "second_factor",
    ]
    actions = [resend_verification, reset_second_factors]
    inlines = [LoginSessionInline, OutboundEmailInline, EmailVerificationInline]
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Personal info", {"fields": ("full_name", "email", "pending_email", "is_email_verified")}),
        ("Permissions", {"fields": ("role", "is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Second factor", {"fields": ("second_factor",)}),
        ("Dates", {"fields": ("created_at", "password_changed_at", "last_login", "security_events")}),
    )
    # What staff change here besides the address (its own flow) and the password (its own form,
    # whose effects User.save() runs): recorded as an event with staff as the actor, and told.
    RECORDED_FIELDS = ("username", "full_name", "is_email_verified", "role", "is_active", "is_staff", "is_superuser")
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("username", "email", "full_name", "password1", "password2")}),
    )

    def save_model(self, request, obj, form, change):
        new_email = obj.email
        if change and "email" in form.changed_data:
            # Staff go through the customer's own flow: the new address is pending until its link
            # is used, the current one is told, a taken one is answered alike.
            obj.email = form.initial["email"]
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            changed = [name for name in self.RECORDED_FIELDS if change and name in form.changed_data]
            if {"role", "is_staff", "is_superuser"} & set(changed) and obj.pending_email:
                # An address change someone else may have asked for must not follow the account up.
                accounts.email_change_cancel(user=obj, reason="cancelled: the account's role changed")
            if changed:
                events.event_record(
                    user=obj,
                    kind=SecurityEvent.Kind.PROFILE_CHANGED,
                    detail=", ".join(changed),
                    notify=obj.pk != request.user.pk,
                )
        if change and "email" in form.changed_data:
            accounts.email_change_request(user=obj, new_email=new_email)
            self.message_user(
                request,
                f"{new_email} is pending: we sent it a link, and the account keeps {obj.email} until it is used.",
                messages.INFO,
            )

    def has_change_permission(self, request, obj=None):
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or policies.can_admin_change(request.user, obj))

    def has_delete_permission(self, request, obj=None):
        """Deleting follows the change rule, never one's own account (the bulk action: the mixin)."""
        allowed = super().has_delete_permission(request, obj)
        if obj is None:
            return allowed
        return allowed and obj.pk != request.user.pk and policies.can_admin_change(request.user, obj)

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            fields += policies.SUPERUSER_FIELDS
        if obj is not None and obj.pk == request.user.pk:
            fields.append("email")  # one's own address: /account/, which asks for the password
        return fields

    def user_change_password(self, request, id, form_url=""):
        """One's own password is changed on /account/, with the current password (a browser left
        open must not be enough); others' here, as Django does, within ``can_admin_change``."""
        # The row the id names, as Django's view will load it ("01" and "1 " name user 1 too).
        target = self.get_object(request, unquote(id))
        if target is not None and target.pk == request.user.pk:
            return own_password_change(request)
        return super().user_change_password(request, id, form_url)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        if "@" in term:
            canonical = identity.canonical_email(term)
            return (queryset.filter(email_canonical=canonical) if canonical else queryset.none()), False
        prefix = identity.canonical_username(term)
        return queryset.filter(Q(username_canonical__startswith=prefix) | Q(full_name__icontains=term)), False

    @admin.display(description="security events")
    def security_events(self, obj: User) -> str:
        if obj.pk is None:
            return "—"
        url = reverse("admin:users_securityevent_changelist") + f"?user__id__exact={obj.pk}"
        return format_html('<a href="{}">Who did what to this account, when, from where</a>', url)

    @admin.display(description="second factor")
    def second_factor(self, obj: User) -> str:
        """Whether the user has one, never what it is: secrets and codes are not shown anywhere."""
        if obj.pk is None:
            return "—"
        found = mfa.status(user=obj)
        factors = (["TOTP on"] if found.totp else []) + (
            [f"{len(found.passkeys)} passkey(s)"] if found.passkeys else []
        )
        if not factors:
            return "none"
        return "; ".join([*factors, f"{found.recovery_codes_left} recovery code(s) left"])

    @admin.display(description="verification email")
    def verification_email(self, obj: User) -> str:
        return VERIFIED if obj.is_email_verified else obj.verification_state or "—"


@admin.register(OutboundEmail)
class OutboundEmailAdmin(SelectionCheckMixin, HistoryMixin, FastListMixin, admin.ModelAdmin):
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
        ids = list(queryset.filter(state=State.FAILED).values_list("pk", flat=True))
        retried = sum(delivery.email_retry(email_id=pk) for pk in ids)
        self.message_user(
            request,
            f"Queued {retried} failed email(s) again; {queryset.count() - retried} skipped "
            "(not failed, expired, or no longer wanted: the address changed or is verified).",
            messages.SUCCESS,
        )


def _feedback_words(event: DeliveryEvent) -> str:
    said = f"{event.event_type} ({event.esp})"
    detail = event.description or event.reason
    return f"{said}: {detail}" if detail else said


@admin.register(Suppression)
class SuppressionAdmin(SelectionCheckMixin, admin.ModelAdmin):
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
class EmailVerificationAdmin(SelectionCheckMixin, HistoryMixin, admin.ModelAdmin):
    list_display = ["id", "user", "email", "purpose", "state", "created_at", "expires_at", "verified_at"]
    list_filter = ["state", "purpose"]
    search_fields = ["email", "user__username"]
    list_select_related = ["user"]
    # The nonce is deliberately absent: with the SECRET_KEY it would give the link away.
    fields = ("user", "email", "purpose", "state", "created_at", "expires_at", "verified_at")
    readonly_fields = fields


@admin.register(LoginSession)
class LoginSessionAdmin(SelectionCheckMixin, SuperuserBulkDeleteMixin, FastListMixin, admin.ModelAdmin):
    """Every user's log-in sessions; staff can block one (its refresh and access tokens stop working)."""

    list_display = ["id", "user", "kind", "created_at", "last_used_at", "expires_at", "client_ip", "status"]
    show_full_result_count = False
    paginator = LargeTablePaginator
    list_per_page = 50  # operators search and filter; each row costs ~1 ms to render
    list_filter = ["kind", "blocked_at", "revoked_at", "created_at"]
    search_fields = ["user__username", "user__email_canonical", "client_ip"]
    list_select_related = ["user"]
    # The refresh token's id is deliberately absent (it is not a secret, but nobody needs it).
    fields = (
        "user",
        "kind",
        "created_at",
        "last_used_at",
        "expires_at",
        "client_ip",
        "user_agent",
        "revoked_at",
        "revoked_reason",
        "blocked_at",
    )
    readonly_fields = fields
    actions = ["block"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        """A session goes with its user (a user's deletion), within the change rule; others block."""
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or policies.can_admin_change(request.user, obj.user))

    @admin.display(description="status")
    def status(self, obj: LoginSession) -> str:
        if obj.blocked_at:
            return "blocked"
        if obj.revoked_at:
            return f"revoked ({obj.revoked_reason})"
        return "live" if obj.is_live else "expired"

    @admin.action(description="Block the selected sessions", permissions=["change"])
    def block(self, request: HttpRequest, queryset: QuerySet[LoginSession]) -> None:
        """Only sessions of users the member of staff may change: a clerk cannot log a superuser out."""
        rows = list(queryset.select_related("user"))
        owners = {user.pk for user in _theirs(request, {row.user for row in rows})}
        blocked = sum(sessions.session_block(session=row) for row in rows if row.user_id in owners)
        refused = sum(1 for row in rows if row.user_id not in owners)
        self.message_user(
            request,
            f"Blocked {blocked} session(s): their tokens stop working now"
            + (f"; {refused} {NOT_YOURS}." if refused else "."),
            messages.WARNING if refused else messages.SUCCESS,
        )


class ActorFilter(admin.SimpleListFilter):
    title = "actor"
    parameter_name = "actor"

    def lookups(self, request, model_admin):
        return [("self", "the user"), ("banker", "a banker"), ("staff", "staff"), ("system", "system")]

    def queryset(self, request, queryset):
        value = self.value()
        if value in ("self", "system"):
            return queryset.filter(actor=value)
        if value in ("banker", "staff"):
            return queryset.filter(actor__startswith=f"{value}:")
        return queryset


@admin.register(SecurityEvent)
class SecurityEventAdmin(SelectionCheckMixin, FastListMixin, admin.ModelAdmin):
    """The security trail, read-only: nothing here adds, changes or deletes an event."""

    list_display = ["at", "kind", "user", "actor", "client_ip", "detail"]
    list_filter = ["kind", ActorFilter, "at"]
    search_fields = ["user__username_canonical", "actor"]
    search_help_text = "The start of a username, or an actor (banker:<username>, staff:<username>)."
    list_select_related = ["user"]
    show_full_result_count = False
    paginator = LargeTablePaginator
    list_per_page = 50
    fields = ("user", "kind", "at", "actor", "actor_user", "client_ip", "user_agent", "detail")
    readonly_fields = fields

    def lookup_allowed(self, lookup, value, request=None):
        return lookup == "user__id__exact" or super().lookup_allowed(lookup, value, request)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        if ":" in term:
            return queryset.filter(actor=term), False
        return queryset.filter(user__username_canonical__startswith=identity.canonical_username(term)), False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AddressRequest)
class AddressRequestAdmin(SelectionCheckMixin, FastListMixin, admin.ModelAdmin):
    """Password-reset and resend requests, read-only: whether the worker has looked each one up.
    The address is what a stranger typed into a public form; it shows on the request's own page
    only, and is not searchable. The sweep deletes requests after a week."""

    list_display = ["id", "kind", "created_at", "dispatched_at", "processed_at"]
    list_filter = ["kind"]
    show_full_result_count = False
    paginator = LargeTablePaginator
    list_per_page = 50
    fields = ("kind", "address", "created_at", "dispatched_at", "processed_at")
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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
        authentication_form=AdminAuthenticationForm,
        template_name=admin.site.login_template or "admin/login.html",
        next_page=reverse("admin:index"),
    )
    return view(request)

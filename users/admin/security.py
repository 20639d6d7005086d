"""Log-in sessions (block one) and the append-only security events."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from users import identity, policies
from users.admin.base import (
    FastListMixin,
    LargeTablePaginator,
    SecretLookupsRefusedMixin,
    SelectionCheckMixin,
    SuperuserBulkDeleteMixin,
    ViewOnlyMixin,
    report,
    theirs,
)
from users.models import (
    LoginSession,
    SecurityEvent,
)
from users.services import sessions

# What staff see of a session, on its own page and on its user's (never the refresh token's id: it
# is not a secret, but nobody needs it).
SESSION_FIELDS = (
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


@admin.register(LoginSession)
class LoginSessionAdmin(
    SecretLookupsRefusedMixin, SelectionCheckMixin, SuperuserBulkDeleteMixin, FastListMixin, admin.ModelAdmin
):
    """Every user's log-in sessions; staff can block one (its refresh and access tokens stop working)."""

    list_display = ["id", "user", "kind", "created_at", "last_used_at", "expires_at", "client_ip", "status"]
    show_full_result_count = False
    paginator = LargeTablePaginator
    list_per_page = 50  # operators search and filter; each row costs ~1 ms to render
    list_filter = ["kind", "blocked_at", "revoked_at", "created_at"]
    search_fields = ["user__username", "user__email_canonical", "client_ip"]
    list_select_related = ["user"]
    fields = ("user", *SESSION_FIELDS)
    readonly_fields = fields
    actions = ["block"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        """The block action (no object); never a form saved back over a block or a revocation."""
        return obj is None and super().has_change_permission(request, obj)

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
        owners = {user.pk for user in theirs(request, {row.user for row in rows})}
        blocked = sum(sessions.session_block(session=row) for row in rows if row.user_id in owners)
        refused = sum(1 for row in rows if row.user_id not in owners)
        report(self, request, f"Blocked {blocked} session(s): their tokens stop working now", refused)


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
class SecurityEventAdmin(
    SecretLookupsRefusedMixin, ViewOnlyMixin, SelectionCheckMixin, FastListMixin, admin.ModelAdmin
):
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

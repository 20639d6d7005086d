"""Pieces every page of the admin shares: the paginator for big tables, the delete that
locks owners first, the selection check, read-only inlines."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import ValidationError
from django.core.paginator import Page, Paginator
from django.db import DataError, connection, transaction
from django.db.models import QuerySet
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpRequest, HttpResponseBadRequest
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from users import policies
from users.models import (
    User,
)


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
        list(
            User.objects.select_for_update(no_key=True)
            .filter(pk__in=user_ids)
            .order_by("pk")
            .values_list("pk", flat=True)
        )

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
    and never save it back from a form (which would write the state it was loaded with). Only a
    superuser deletes one, and never one ``owed``: deleting a notice not yet sent would silence
    what the user must be told. (Deleting a user takes these along and so follows the same rule;
    a user with security events, append-only, is not deleted in the admin at all.)"""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        allowed = request.user.is_superuser and super().has_delete_permission(request, obj)
        return allowed and (obj is None or not self.owed(obj))

    def owed(self, obj) -> bool:
        """Whether the service still has to act on ``obj`` (it must not be deleted now)."""
        return False


# Columns whose values are secrets (or half of one): never shown, and never a filter either — a
# changelist answers any lookup on its model's own columns from the query string, so
# ``?nonce__startswith=`` guessed a link's nonce a character at a time (a review).
SECRET_COLUMNS = frozenset(
    {
        "password",
        "nonce",
        "refresh_jti",
        "secret",
        "code_hash",
        "token_hash",
        "challenge",
        "credential_id",
        "public_key",
    }
)


class SecretLookupsRefusedMixin:
    """A filter naming a secret column, anywhere in its path, is Django's "disallowed lookup" (400)."""

    # An admin's own columns that are no filter either (not secrets, but not to be searched).
    unfiltered_columns: frozenset[str] = frozenset()

    def lookup_allowed(self, lookup, value, request=None):
        if any(part in SECRET_COLUMNS or part in self.unfiltered_columns for part in lookup.split(LOOKUP_SEP)):
            return False
        return super().lookup_allowed(lookup, value, request)  # type: ignore[misc]


class SelectionCheckMixin:
    """A selection for an action is ids of this model, or a ``400`` before the action runs (Django
    hands the raw values to the query: "abc" for an integer id, "x" for a UUID). A malformed filter
    (a NUL, an address that is no IP) is Django's own "invalid lookup" (the list again, ``?e=1``),
    for a page and for an action posted to it alike: the list is built, and fails, before any
    action runs."""

    def get_changelist_instance(self, request):
        try:
            with transaction.atomic():  # a failed query must not poison an enclosing transaction
                return super().get_changelist_instance(request)  # type: ignore[misc]
        except (ValueError, ValidationError, DataError) as exc:
            raise IncorrectLookupParameters(str(exc)) from exc

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


class ViewOnlyMixin:
    """Rows written by the service alone (append-only records): staff read them, never add,
    change or delete one."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(admin.TabularInline):
    """History shown on a user's page: nothing is added or deleted from here."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


NOT_YOURS = "not yours to act on (other staff or a superuser)"


def theirs(request: HttpRequest, users: Iterable[User]) -> list[User]:
    """Of ``users``, those the member of staff asking may act on (``policies.can_admin_change``):
    an action is no way around the change form's rule."""
    staff = cast("User", request.user)
    return [user for user in users if policies.can_admin_change(staff, user)]


def report(modeladmin, request: HttpRequest, done: str, refused: int, refused_words: str = NOT_YOURS) -> None:
    """An action's summary: what it did, and how many of the selected it refused to act on."""
    modeladmin.message_user(
        request,
        done + (f"; {refused} {refused_words}." if refused else "."),
        messages.WARNING if refused else messages.SUCCESS,
    )

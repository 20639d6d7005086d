"""Users: the state of their verification email, their emails, links and sessions, and the
actions staff take on them (a new verification email, a reset of the second factors)."""

from __future__ import annotations

from typing import cast

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from users import identity, policies
from users.admin.base import (
    FastListMixin,
    LargeTablePaginator,
    OwnersFirstDeleteMixin,
    ReadOnlyInline,
    SecretLookupsRefusedMixin,
    SelectionCheckMixin,
    SuperuserBulkDeleteMixin,
    report,
    theirs,
)
from users.admin.security import SESSION_FIELDS
from users.admin.site import own_password_change
from users.mfa import flows as mfa
from users.models import (
    EmailVerification,
    LoginSession,
    OutboundEmail,
    SecurityEvent,
    User,
)
from users.services import accounts, events, signup

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


class OutboundEmailInline(ReadOnlyInline):
    model = OutboundEmail
    fk_name = "user"
    show_change_link = True
    fields = ("id", "kind", "recipient", "state", "attempts", "last_error", "created_at", "sent_at", "expires_at")
    readonly_fields = fields
    ordering = ["-created_at", "-id"]
    verbose_name_plural = "emails"


class EmailVerificationInline(ReadOnlyInline):
    model = EmailVerification
    fields = ("id", "email", "purpose", "state", "created_at", "expires_at", "verified_at")
    readonly_fields = fields
    ordering = ["-created_at"]
    verbose_name_plural = "verification links"


class LoginSessionInline(ReadOnlyInline):
    model = LoginSession
    show_change_link = True
    fields = ("id", *SESSION_FIELDS)
    readonly_fields = fields
    ordering = ["-created_at"]
    verbose_name_plural = "log-in sessions"


class CanonicalUniqueMixin:
    """The constraints on the canonical username and address are on generated columns, which no
    form field holds, so Django's form never checked them: ``ROOT`` beside ``root`` was a 500 at
    save (a review). A field error instead."""

    instance: User
    cleaned_data: dict

    def _others(self) -> QuerySet[User]:
        return User.objects.exclude(pk=self.instance.pk) if self.instance.pk else User.objects.all()

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        if self._others().filter(username_canonical=identity.canonical_username(username)).exists():
            raise ValidationError("A user with that username already exists.", code="unique")
        return username


class ChangeForm(CanonicalUniqueMixin, UserChangeForm):
    """(A new address is not checked here: it goes through the customer's pending flow, where a
    taken one is answered alike: ``UserAdmin.save_model``.)"""

    class Meta(UserChangeForm.Meta):  # type: ignore[name-defined]
        model = User
        fields = "__all__"


class CreationForm(CanonicalUniqueMixin, AdminUserCreationForm):
    class Meta(AdminUserCreationForm.Meta):  # type: ignore[name-defined]
        model = User
        fields = ["username", "email", "full_name"]

    def clean_email(self) -> str:
        """Stored as sign-up stores it (``identity.normalize_email``: the domain as its IDNA
        A-label): kept as typed, ``uni@bücher.de`` was another account than ``uni@xn--bcher-kva.de``
        and could log in by neither (a review)."""
        email = identity.normalize_email(self.cleaned_data["email"])
        if self._others().filter(email_canonical=email.lower()).exists():
            raise ValidationError("A user with that email address already exists.", code="unique")
        return email


@admin.action(description="Send a new verification email", permissions=["change"])
def resend_verification(modeladmin, request: HttpRequest, queryset: QuerySet[User]) -> None:
    allowed = theirs(request, queryset)
    sent = sum(1 for user in allowed if signup.verification_resend(user=user))
    verified = sum(1 for user in allowed if user.is_email_verified)
    refused = queryset.count() - len(allowed)
    done = f"Queued {sent} verification email(s); {verified} already verified"
    if suppressed := len(allowed) - sent - verified:
        done += f"; {suppressed} to a suppressed address (lift it in Suppressions first)"
    report(modeladmin, request, done, refused)


@admin.action(description="Reset the second factors (the customer lost them)", permissions=["change"])
def reset_second_factors(modeladmin, request: HttpRequest, queryset: QuerySet[User]) -> None:
    """Staff remove every factor of the selected users — after checking who is asking by other
    means. Each reset is a security event naming the staff member, and the user is mailed a notice.
    Only of users they may change (``policies.can_admin_change``: never a superuser or other staff
    for non-superusers), and never their own: that goes through /account/security/'s step-up."""
    staff = cast("User", request.user)
    allowed = [user for user in theirs(request, queryset) if user.pk != staff.pk]
    reset = sum(1 for user in allowed if mfa.factors_reset_by_staff(user=user))
    refused = queryset.count() - len(allowed)
    done = f"Reset the second factors of {reset} user(s); {len(allowed) - reset} had none"
    report(modeladmin, request, done, refused, "not yours to reset (yourself, other staff or a superuser)")


if admin.site.is_registered(Group):  # django.contrib.auth's, registered on import above
    admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(DjangoGroupAdmin):
    """A group's permissions are permissions: only superusers make, change or delete groups, as only
    they set a user's groups and permissions (``policies.SUPERUSER_FIELDS``). Staff with the
    ``auth.change_group`` permission gave their own group every permission (a review)."""

    def has_add_permission(self, request):
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


@admin.register(User)
class UserAdmin(
    SecretLookupsRefusedMixin,
    SelectionCheckMixin,
    SuperuserBulkDeleteMixin,
    OwnersFirstDeleteMixin,
    FastListMixin,
    DjangoUserAdmin,
):
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
            fields.append("role")  # a member of staff does not make themself a banker
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

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from users import services
from users.models import EmailVerification, User


class LatestVerificationStateFilter(admin.SimpleListFilter):
    title = "verification email"
    parameter_name = "verification_state"

    def lookups(self, request, model_admin):
        return EmailVerification.State.choices

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(latest_verification_state=self.value())
        return queryset


class EmailVerificationInline(admin.TabularInline):
    model = EmailVerification
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("id", "email", "state", "attempts", "last_error", "created_at", "sent_at", "verified_at", "expires_at")
    readonly_fields = fields
    ordering = ["-created_at"]

    def has_add_permission(self, request, obj=None):
        return False


class ChangeForm(UserChangeForm):
    class Meta(UserChangeForm.Meta):  # type: ignore[name-defined]
        model = User
        fields = "__all__"


class CreationForm(AdminUserCreationForm):
    class Meta(AdminUserCreationForm.Meta):  # type: ignore[name-defined]
        model = User
        fields = ["username", "email", "full_name"]


@admin.action(description="Send a new verification email", permissions=["change"])
def resend_verification(modeladmin, request: HttpRequest, queryset: QuerySet[User]) -> None:
    sent = sum(1 for user in queryset if services.verification_resend(user=user) is not None)
    skipped = queryset.count() - sent
    modeladmin.message_user(
        request, f"Queued {sent} verification email(s); {skipped} already verified.", messages.SUCCESS
    )


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = ChangeForm
    add_form = CreationForm
    list_display = [
        "username",
        "email",
        "full_name",
        "is_email_verified",
        "verification_state",
        "created_at",
        "is_staff",
    ]
    list_filter = ["is_email_verified", LatestVerificationStateFilter, "is_staff", "is_active", "created_at"]
    search_fields = ["username", "email", "full_name"]
    ordering = ["-created_at"]
    readonly_fields = ["created_at", "password_changed_at", "last_login"]
    actions = [resend_verification]
    inlines = [EmailVerificationInline]
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Personal info", {"fields": ("full_name", "email", "is_email_verified")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("created_at", "password_changed_at", "last_login")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("username", "email", "full_name", "password1", "password2")}),
    )

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "email" in form.changed_data:
            services.user_email_changed(user=obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        latest = EmailVerification.objects.filter(user=OuterRef("pk")).order_by("-created_at", "-id")
        return super().get_queryset(request).annotate(latest_verification_state=Subquery(latest.values("state")[:1]))

    @admin.display(description="verification email", ordering="latest_verification_state")
    def verification_state(self, obj: User) -> str:
        return getattr(obj, "latest_verification_state", None) or "—"


@admin.register(EmailVerification)
class EmailVerificationAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "user_link",
        "email",
        "state",
        "attempts",
        "last_error_short",
        "created_at",
        "sent_at",
        "verified_at",
        "expires_at",
    ]
    list_filter = ["state", "created_at"]
    search_fields = ["email", "user__username"]
    list_select_related = ["user"]
    # The nonce is deliberately absent: with the SECRET_KEY it would give the link away.
    fields = (
        "user",
        "email",
        "state",
        "attempts",
        "last_error",
        "created_at",
        "expires_at",
        "claimed_at",
        "sent_at",
        "verified_at",
    )
    readonly_fields = fields
    actions = ["resend", "retry_failed"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="user", ordering="user__username")
    def user_link(self, obj: EmailVerification) -> str:
        url = reverse("admin:users_user_change", args=[obj.user_id])
        return format_html('<a href="{}">{}</a>', url, obj.user.username)

    @admin.display(description="last error")
    def last_error_short(self, obj: EmailVerification) -> str:
        return obj.last_error if len(obj.last_error) <= 80 else obj.last_error[:79] + "…"

    @admin.action(description="Send the user a new verification email", permissions=["change"])
    def resend(self, request: HttpRequest, queryset: QuerySet[EmailVerification]) -> None:
        users = User.objects.filter(pk__in=queryset.values("user_id"))
        resend_verification(self, request, users)

    @admin.action(description="Retry failed emails (same link)", permissions=["change"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[EmailVerification]) -> None:
        ids = list(queryset.filter(state=EmailVerification.State.FAILED).values_list("pk", flat=True))
        retried = sum(services.verification_retry(verification_id=pk) for pk in ids)
        self.message_user(
            request,
            f"Queued {retried} failed email(s) again; {queryset.count() - retried} skipped "
            "(not failed, expired or already verified).",
            messages.SUCCESS,
        )

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm, SetPasswordForm

from users import identity
from users.mfa import flows as mfa
from users.models import User


def code_field(*, required: bool = True) -> forms.CharField:
    """The second factor's proof on a page, shown only to users who have a factor."""
    return forms.CharField(
        label="Code from your authenticator app (or a recovery code)",
        max_length=32,
        required=required,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "text"}),
    )


CREDENTIAL_MAX = 16384  # a passkey's answer is a few KB at most


class CredentialField(forms.CharField):
    """A passkey's answer (the WebAuthn ``AuthenticationResponseJSON``), put in a hidden field by
    ``users/static/users/webauthn.js``; a JSON object or nothing."""

    widget = forms.HiddenInput

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, **kwargs)

    def to_python(self, value: Any) -> dict[str, Any] | None:  # type: ignore[override]
        text = super().to_python(value)
        if not text:
            return None
        if len(text) > CREDENTIAL_MAX:  # max_length would only see the parsed object
            raise forms.ValidationError("Your passkey's answer is too long: try again.", code="max_length")
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
            parsed = None
        if not isinstance(parsed, dict):
            raise forms.ValidationError("Your passkey's answer could not be read: try again.", code="invalid")
        return parsed


def add_proof_fields(form: forms.Form, user: User | None) -> None:
    """Once ``user`` has a second factor: the code field, and with a passkey the hidden ``credential``
    (either proves it; the re-authentication says which is missing or wrong)."""
    if user is None or not mfa.has_factor(user=user):
        return
    form.fields["code"] = code_field(required=False)  # missing: the re-authentication says what to give
    if mfa.PASSKEY in mfa.methods(user=user):
        form.fields["credential"] = CredentialField()


class SignupForm(forms.Form):
    username = forms.CharField(
        max_length=150,
        help_text="ASCII letters, digits and ./+/-/_ only (no @).",
        widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True}),
    )
    full_name = forms.CharField(max_length=255, widget=forms.TextInput(attrs={"autocomplete": "name"}))
    email = forms.EmailField(max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"}))
    password1 = forms.CharField(
        label="Password",
        strip=False,
        max_length=settings.PASSWORD_MAX_LENGTH,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html(),
    )
    password2 = forms.CharField(
        label="Password (again)",
        strip=False,
        max_length=settings.PASSWORD_MAX_LENGTH,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean_username(self) -> str:
        return identity.normalize_username(self.cleaned_data["username"])

    def clean_full_name(self) -> str:
        return identity.normalize_full_name(self.cleaned_data["full_name"])

    def clean_email(self) -> str:
        return identity.normalize_email(self.cleaned_data["email"])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        password1, password2 = cleaned.get("password1"), cleaned.get("password2")
        if password1 and password2 and password1 != password2:
            self.add_error("password2", "The two passwords don't match.")
        elif password1:
            candidate = User(
                username=cleaned.get("username", ""),
                email=cleaned.get("email", ""),
                full_name=cleaned.get("full_name", ""),
            )
            try:
                password_validation.validate_password(password1, user=candidate)
            except forms.ValidationError as exc:
                self.add_error("password1", exc)
        return cleaned


class VerifyEmailForm(forms.Form):
    email_id = forms.IntegerField(min_value=1, max_value=2**63 - 1, widget=forms.HiddenInput)
    secret_code = forms.CharField(max_length=512, widget=forms.HiddenInput)


class ResendVerificationForm(forms.Form):
    email = forms.EmailField(max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"}))

    def clean_email(self) -> str:
        return identity.normalize_email(self.cleaned_data["email"])


class LoginLengthMixin:
    """A log-in name longer than any account's is a field error before the hash
    (``identity.login_length_check``)."""

    cleaned_data: dict[str, Any]

    def clean_username(self) -> str:
        identity.login_length_check(self.cleaned_data["username"])
        return self.cleaned_data["username"]


class LoginForm(LoginLengthMixin, AuthenticationForm):
    """Django's log-in form, by username or address, with one error for any wrong pair."""

    username = forms.CharField(
        label="Username or email",
        max_length=254,
        widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True}),
    )
    error_messages = {
        "invalid_login": "No account matches that username or address and password.",
        "inactive": "No account matches that username or address and password.",
        "email_not_verified": (
            "Verify your email address first: use the link we sent you, or ask for a new one (below)."
        ),
    }

    def confirm_login_allowed(self, user: User) -> None:
        super().confirm_login_allowed(user)
        if settings.ACCOUNT_LOGIN_REQUIRES_VERIFIED_EMAIL and not user.is_email_verified:
            raise forms.ValidationError(self.error_messages["email_not_verified"], code="email_not_verified")
        if user.pk is None:  # a sign-up's stand-in (users.auth): no account to log in to
            raise self.get_invalid_login_error()


class AdminLoginForm(LoginLengthMixin, AdminAuthenticationForm):
    """The admin's log-in form (its ``max_length`` is only the input's attribute: Django sets it
    after the field is built)."""


class SecondStepForm(forms.Form):
    """The second step of a page log-in: a TOTP code or a recovery code, or (with the button beside
    the field) the answer of one of the user's passkeys."""

    code = code_field(required=False)
    credential = CredentialField()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["code"].widget.attrs["autofocus"] = True

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not self.errors and not cleaned.get("code") and not cleaned.get("credential"):
            self.add_error("code", forms.ValidationError("This field is required.", code="required"))
        return cleaned


class NameForm(forms.Form):
    full_name = forms.CharField(
        label="Full name", max_length=255, widget=forms.TextInput(attrs={"autocomplete": "name"})
    )

    def clean_full_name(self) -> str:
        return identity.normalize_full_name(self.cleaned_data["full_name"])


class EmailChangeForm(forms.Form):
    email = forms.EmailField(
        label="New email address", max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"})
    )
    current_password = forms.CharField(
        label="Current password",
        strip=False,
        max_length=128,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )

    def __init__(self, *args: Any, user: User | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        add_proof_fields(self, user)

    def clean_email(self) -> str:
        return identity.normalize_email(self.cleaned_data["email"])


class PasswordResetRequestForm(ResendVerificationForm):
    """The address to send a reset link to (same rules as any address we mail)."""


class ReauthPasswordChangeForm(PasswordChangeForm):
    """Django's password change form, whose old password (and second factor, once the user has one)
    is checked by the re-authentication: ``check(old_password, code)`` returns None when right, else
    the field at fault and the message — so a wrong one counts as a failed log-in."""

    def __init__(
        self,
        user: Any,
        *args: Any,
        check: Callable[..., tuple[str, str] | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(user, *args, **kwargs)
        self.check = check
        add_proof_fields(self, user)
        # Django focuses the old password; on the account page it is mid-page, below other forms.
        self.fields["old_password"].widget.attrs.pop("autofocus", None)

    def clean_old_password(self) -> str:
        return self.cleaned_data["old_password"]  # checked in clean(), with the code

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:  # nothing to check a password or a code against yet
            return cleaned
        refused = (
            self.check(cleaned["old_password"], cleaned.get("code"), cleaned.get("credential"))
            if self.check
            else ("old_password", "?")
        )
        if refused is not None:
            field, message = refused
            self.add_error(field, forms.ValidationError(message, code="password_incorrect"))
        return cleaned


class ResetSetPasswordForm(SetPasswordForm):
    """The new password through a reset link, and the second factor when the account has one."""

    def __init__(self, user: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(user, *args, **kwargs)
        add_proof_fields(self, user)

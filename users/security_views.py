"""``/account/security/``: the second factor on a page — TOTP with its QR code, recovery codes shown
once, passkeys through the browser's WebAuthn API — and the user's sessions and security events.

Every change needs the current password and, once the user has a factor, a proof (a code, or a
passkey's answer put in the form by ``users/static/users/webauthn.js``), exactly as the API's
``/api/mfa/…`` routes do; the same flows (``users.mfa.flows``) do the work. Codes and secrets are
rendered into the answer to the POST that made them (never stored to be shown again, never cached).
"""

from __future__ import annotations

import base64
import uuid
from typing import Any, cast

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from users import identity, policies, reauth
from users.account_views import SESSION_HAS_ENDED, passkey_options_answer, reauthenticate_or_why
from users.auth import locked_out_words
from users.errors import FactorStateError, LockedOut, WrongProof
from users.forms import CredentialField, add_proof_fields
from users.mfa import flows as mfa
from users.mfa import passkeys
from users.models import LoginSession, Passkey, SecurityEvent, User
from users.receivers import BROWSER_SESSION_KEY
from users.services import sessions
from users.throttles import AccountThrottle, SessionEndThrottle, throttle_wait
from users.views import too_many

NO_SUCH_PASSKEY = "You have no such passkey."


class StepUpForm(forms.Form):
    """The current password, and the second factor once the user has one."""

    current_password = forms.CharField(
        label="Current password",
        strip=False,
        max_length=128,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        add_proof_fields(self, user)


class PasskeyNameField(forms.CharField):
    """A passkey's name, held to the rules of a person's name: it is shown on the security page."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=identity.PASSKEY_NAME_MAX_LENGTH, **kwargs)

    def clean(self, value: Any) -> str:
        return identity.normalize_passkey_name(super().clean(value))


class PasskeyBeginForm(StepUpForm):
    name = PasskeyNameField(
        label="A name for it (e.g. the device)", widget=forms.TextInput(attrs={"autocomplete": "off"})
    )
    field_order = ["name", "current_password", "code"]


class PasskeyRemoveForm(StepUpForm):
    passkey = forms.IntegerField(widget=forms.HiddenInput, min_value=1, max_value=2**63 - 1)


class TotpConfirmForm(forms.Form):
    code = forms.CharField(
        label="The 6-digit code the app shows now",
        max_length=6,
        min_length=6,
        # No autofocus: it skipped a screen reader past the QR code and the key it must read first.
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )


class PasskeyFinishForm(forms.Form):
    name = PasskeyNameField(widget=forms.HiddenInput)
    credential = CredentialField()


class SessionRevokeForm(forms.Form):
    session = forms.UUIDField(widget=forms.HiddenInput)


STEP_UP_FORMS: dict[str, type[StepUpForm]] = {
    "totp_setup": StepUpForm,
    "totp_disable": StepUpForm,
    "recovery_codes": StepUpForm,
    "passkey_begin": PasskeyBeginForm,
    "passkey_remove": PasskeyRemoveForm,
}


def _user(request: HttpRequest) -> User:
    return cast("User", request.user)


def _auto_id(which: str, passkey_id: object = None) -> str:
    """Field ids unique on the page (several forms have a password field), names unchanged."""
    return f"id_{which}{passkey_id or ''}_%s"


def _page(request: HttpRequest, *, status: int = 200, **extra: Any) -> HttpResponse:
    user = _user(request)
    state = mfa.status(user=user)
    forms_ = {
        name: extra.pop(name, None) or form_class(user=user, auto_id=_auto_id(name))
        for name, form_class in STEP_UP_FORMS.items()
    }
    remove_forms: dict[int, StepUpForm] = {
        key.id: PasskeyRemoveForm(user=user, initial={"passkey": key.id}, auto_id=_auto_id("passkey_remove", key.id))
        for key in state.passkeys
    }
    if (sent := forms_.pop("passkey_remove")).is_bound:  # the one that was sent, with its errors
        remove_forms[_passkey_id(sent)] = sent
    current = request.session.get(BROWSER_SESSION_KEY)
    live = LoginSession.objects.filter(user=user).live().order_by("-created_at")
    # A role that must have a second factor and has none sets one up and does nothing else (as the
    # API's 403 mfa_enrollment_required): no sessions or events to read or act on until then.
    enrolling = _enrolling(user)
    context = {
        "state": state,
        "forms": forms_,
        "passkeys": [(key, remove_forms[key.id], f"passkey{key.id}-") for key in state.passkeys],
        "totp_pending": not state.totp and mfa.totp_pending(user=user),
        "totp_confirm_form": extra.pop("totp_confirm_form", None) or TotpConfirmForm(),
        "enrollment_required": enrolling,
        "sessions": [] if enrolling else [(s, str(s.pk) == current) for s in live],
        "events": [] if enrolling else SecurityEvent.objects.filter(user=user)[:20],
        **extra,
    }
    return render(request, "users/security.html", context, status=status)


def _enrolling(user: User) -> bool:
    return policies.must_have_second_factor(user) and not mfa.has_factor(user=user)


def _passkey_id(form: forms.Form) -> int:
    raw = form.data.get("passkey", "")
    return int(raw) if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) < 19 else 0


def _qr_data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def _step_up(request: HttpRequest, form: StepUpForm) -> bool:
    """The form's password and proof are right (else its errors say which, and a wrong one counted)."""
    data = form.cleaned_data
    refused = reauthenticate_or_why(request, data["current_password"], data.get("code") or None, data.get("credential"))
    if refused is None:
        return True
    field, message = refused
    form.add_error("current_password" if field == "old_password" else field, message)
    return False


@sensitive_post_parameters("current_password", "code", "credential")
@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def security(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _page(request)
    which = request.POST.get("form", "")
    ending_sessions = which in ("session_revoke", "sessions_end_others")
    if wait := throttle_wait(request, [SessionEndThrottle if ending_sessions else AccountThrottle]):
        return too_many(request, wait)
    user = _user(request)
    if which == "totp_confirm":
        return _totp_confirm(request, user)
    if which == "passkey_finish":
        return _passkey_finish(request, user)
    if ending_sessions:
        if _enrolling(user):
            return redirect("account-security")  # the page says why
        if which == "sessions_end_others":
            ended = sessions.sessions_end_others(user=user)
            messages.success(request, f"Every other session is logged out ({ended}).")
            return redirect("account-security")
        return _session_revoke(request, user)
    form_class = STEP_UP_FORMS.get(which)
    if form_class is None:
        return redirect("account-security")
    form = form_class(request.POST, user=user, auto_id=_auto_id(which))
    if which == "passkey_remove":
        form.auto_id = _auto_id(which, _passkey_id(form))
    if not form.is_valid():
        return _page(request, status=400, **{which: form})
    try:
        # Refused for the factors' state before the step-up: a one-time code is never spent for nothing.
        mfa.change_allowed(user=user, change=which)
        if (
            which == "passkey_remove"
            and not Passkey.objects.filter(user=user, pk=form.cleaned_data["passkey"]).exists()
        ):
            raise FactorStateError(NO_SUCH_PASSKEY)
        if not _step_up(request, form):
            return _page(request, status=400, **{which: form})
        return _changed(request, user, which, form)
    except FactorStateError as exc:
        messages.error(request, str(exc))
        return redirect("account-security")


def _changed(request: HttpRequest, user: User, which: str, form: StepUpForm) -> HttpResponse:
    if which == "totp_setup":
        setup = mfa.totp_setup(user=user)
        return _page(request, totp_new={"secret": setup.secret, "qr": _qr_data_uri(setup.qr_svg)})
    if which == "totp_disable":
        mfa.totp_disable(user=user)
        messages.success(request, "Your authenticator app is no longer a second factor.")
    elif which == "recovery_codes":
        return _page(request, new_recovery_codes=mfa.recovery_codes_regenerate(user=user))
    elif which == "passkey_begin":
        options = passkeys.registration_options(user=user)
        return _page(request, passkey_creation={"options": options, "name": form.cleaned_data["name"]})
    elif which == "passkey_remove":
        try:
            mfa.passkey_remove(user=user, passkey_id=form.cleaned_data["passkey"])
        except Passkey.DoesNotExist:
            messages.error(request, NO_SUCH_PASSKEY)
        else:
            messages.success(request, "The passkey is removed.")
    return redirect("account-security")


def _totp_confirm(request: HttpRequest, user: User) -> HttpResponse:
    form = TotpConfirmForm(request.POST)
    if form.is_valid():
        code = form.cleaned_data["code"]
        try:  # guesses cost what a wrong password does
            codes = reauth.proof_attempt(
                request=request, user=user, check=lambda: mfa.totp_confirm(user=user, code=code)
            )
        except LockedOut:
            form.add_error("code", locked_out_words(request, reset_hint=False))
        except WrongProof:
            form.add_error("code", "That code is not right: check the app's clock, and type the code it shows now.")
        except FactorStateError as exc:
            messages.error(request, str(exc))
            return redirect("account-security")
        else:
            messages.success(request, "Your authenticator app is now your second factor.")
            return _page(request, new_recovery_codes=codes)
    return _page(request, status=400, totp_confirm_form=form)


def _passkey_finish(request: HttpRequest, user: User) -> HttpResponse:
    form = PasskeyFinishForm(request.POST)
    if form.is_valid() and form.cleaned_data["credential"] is not None:
        try:
            added = mfa.passkey_add(
                user=user, name=form.cleaned_data["name"], credential=form.cleaned_data["credential"]
            )
        except WrongProof:
            pass
        else:
            messages.success(request, f"The passkey “{added.passkey.name}” is added.")
            if added.recovery_codes is not None:
                return _page(request, new_recovery_codes=added.recovery_codes)
            return redirect("account-security")
    messages.error(request, "The passkey was not added: its answer was refused or came too late. Try again.")
    return redirect("account-security")


def _session_revoke(request: HttpRequest, user: User) -> HttpResponse:
    form = SessionRevokeForm(request.POST)
    key = form.cleaned_data["session"] if form.is_valid() else uuid.UUID(int=0)
    if sessions.session_revoke(user=user, session_id=key):
        messages.success(request, "That session is logged out.")
    else:
        messages.error(request, "No such session of yours is still live.")
    return redirect("account-security")


@never_cache
@require_http_methods(["POST"])
def security_challenge(request: HttpRequest) -> JsonResponse:
    """Options for a passkey's answer to a step-up on the account pages (CSRF like any POST). A
    session that has ended gets a JSON answer the page's script shows, not the log-in page."""
    if not request.user.is_authenticated:
        return JsonResponse({"detail": SESSION_HAS_ENDED}, status=403)
    if wait := throttle_wait(request, [AccountThrottle]):
        return JsonResponse({"detail": "Too many requests."}, status=429, headers={"Retry-After": str(wait)})
    return passkey_options_answer(_user(request), passkeys.Purpose.STEP_UP)

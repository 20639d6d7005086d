"""HTML pages of the account: log in and out, the account page, password reset.

Django's auth views and forms where they fit (``LoginView``, ``LogoutView``,
``PasswordChangeForm``, ``SetPasswordForm``); the services do the rest, exactly as for the API.
Every form has CSRF; the same throttles as the API; a locked-out log-in is django-axes' 429.
"""

from __future__ import annotations

from functools import partial
from typing import Any, cast

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, update_session_auth_hash
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render, resolve_url
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from users import reauth
from users.auth import locked_out_words, lockout_response, proof_turn
from users.context_processors import browser_session_state
from users.errors import InvalidToken, LockedOut, ProofMissing, WrongPassword, WrongProof
from users.forms import (
    EmailChangeForm,
    LoginForm,
    NameForm,
    PasswordResetRequestForm,
    ReauthPasswordChangeForm,
    ResetSetPasswordForm,
    SecondStepForm,
)
from users.mfa import flows as mfa
from users.mfa import passkeys
from users.models import SecurityEvent, User
from users.services import accounts
from users.throttles import (
    AccountThrottle,
    LoginThrottle,
    PasskeyOptionsThrottle,
    PasswordResetAddressThrottle,
    PasswordResetThrottle,
    throttle_wait,
)
from users.views import too_many

# The second step of a page log-in: the Django session (anonymous until the proof) keeps the mfa
# token's hash (the session table holds no token) and where to go after, never the user's id; the
# token's row says whose log-in it is.
SECOND_STEP_KEY = "_login_second_step"
BACKEND = "users.auth.UsernameOrEmailBackend"
SECOND_STEP_EXPIRED = "Your log-in expired: start again."
WRONG_CODE = "That code is not right, or was used already (a code works once: wait for your app's next one)."


class SecondStepLoginView(auth_views.LoginView):
    """Django's ``LoginView`` whose right password opens no session for an account with a second
    factor: it starts the second step instead (``/login/`` and ``/admin/login/`` alike)."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if wait := throttle_wait(request, [LoginThrottle]):  # failed log-ins of this client address
            return too_many(request, wait)
        login_name = request.POST.get("username", "")
        try:
            with proof_turn(request, login_name if isinstance(login_name, str) else ""):
                return super().post(request, *args, **kwargs)
        except LockedOut:
            return lockout_response(request)

    def form_valid(self, form: Any) -> HttpResponse:
        user = form.get_user()
        self.request.session.pop(SECOND_STEP_KEY, None)  # an earlier, unfinished one
        if not mfa.has_factor(user=user):
            return super().form_valid(form)
        # A new session key before anything is kept: a key planted before the log-in is worth nothing.
        self.request.session.cycle_key()
        try:
            token = mfa.login_token_issue(user=user)
        except InvalidToken:  # the password changed while it was being checked
            form.add_error(None, form.get_invalid_login_error())
            return self.form_invalid(form)
        pending = {"token_hash": mfa.login_token_hash(token), "next": self.get_success_url()}
        self.request.session[SECOND_STEP_KEY] = pending
        return redirect("login-verify")


class LoginView(SecondStepLoginView):
    template_name = "users/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True

    def form_invalid(self, form: Any) -> HttpResponse:
        response = super().form_invalid(form)
        response.status_code = 400
        return response


def _safe_next(request: HttpRequest, url: object) -> str:
    allowed = url_has_allowed_host_and_scheme(
        url if isinstance(url, str) else None, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return cast("str", url) if allowed else resolve_url(settings.LOGIN_REDIRECT_URL)


def _second_step_expired(request: HttpRequest) -> HttpResponse:
    request.session.pop(SECOND_STEP_KEY, None)
    messages.error(request, SECOND_STEP_EXPIRED)
    return redirect("login")


@sensitive_post_parameters("code")
@never_cache
@require_http_methods(["GET", "POST"])
def login_verify(request: HttpRequest) -> HttpResponse:
    """``/login/verify/``: the code (TOTP or recovery) after the right password. A right one logs in
    (a browser session, as the password alone does for an account without a factor); a wrong or
    replayed one is a failed log-in of the account from this address."""
    if request.method == "POST" and (wait := throttle_wait(request, [LoginThrottle])):
        return too_many(request, wait)
    pending = request.session.get(SECOND_STEP_KEY)
    if not isinstance(pending, dict) or not isinstance(pending.get("token_hash"), str):
        return _second_step_expired(request)
    token_hash: str = pending["token_hash"]
    try:
        user = mfa.login_token_user(token_hash=token_hash)
    except InvalidToken:
        return _second_step_expired(request)
    form = SecondStepForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        proof = {"code": form.cleaned_data.get("code") or None, "credential": form.cleaned_data.get("credential")}
        try:  # a wrong proof counts as a failed log-in: django-axes turns the last one into 429
            user = reauth.proof_attempt(
                request=request, user=user, check=lambda: mfa.login_token_redeem(token_hash=token_hash, **proof)
            )
        except LockedOut:
            return lockout_response(request)
        except InvalidToken:  # used, expired or dead since it was read
            return _second_step_expired(request)
        except WrongProof:
            form.add_error("code", WRONG_CODE)
        else:
            next_url = _safe_next(request, pending.get("next"))
            del request.session[SECOND_STEP_KEY]
            login(request, user, backend=BACKEND)  # a new session key again, and the session row
            return redirect(next_url)
    elif request.method == "POST" and reauth.is_locked(request=request, user=user):
        return lockout_response(request)
    context = {"form": form, "methods": mfa.methods(user=user)}
    return render(request, "users/login_verify.html", context, status=400 if form.errors else 200)


@never_cache
@require_http_methods(["POST"])
def login_verify_challenge(request: HttpRequest) -> JsonResponse:
    """Options for a passkey's answer at the second step (the pending log-in says whose)."""
    if wait := throttle_wait(request, [LoginThrottle, PasskeyOptionsThrottle]):
        return JsonResponse({"detail": "Too many requests."}, status=429, headers={"Retry-After": str(wait)})
    pending = request.session.get(SECOND_STEP_KEY)
    try:
        user = mfa.login_token_user(token_hash=str(pending["token_hash"]) if isinstance(pending, dict) else "")
    except (InvalidToken, KeyError):
        return JsonResponse({"detail": SECOND_STEP_EXPIRED}, status=400)
    return passkey_options_answer(user, passkeys.Purpose.LOGIN)


@require_http_methods(["GET", "HEAD"])
def home(request: HttpRequest) -> HttpResponse:
    """``/``: the account for a logged-in browser, the log-in page otherwise."""
    return redirect("account" if request.user.is_authenticated else "login")


SESSION_HAS_ENDED = "Your session has ended: log in again."


@never_cache
@require_http_methods(["GET"])
def session_state(request: HttpRequest) -> JsonResponse:
    """``/account/session/``: when this browser's session now ends without another request, and
    whether activity can put that off — for a page's idle warning ("Stay logged in"), which asked
    for the page's own path again (a verification page without its query answered 400). Like any
    request of a live session, it counts as activity. ``?session=<id>`` asks about the session a
    page was shown in: after a log-out and another log-in in this browser, that one has ended."""
    state = browser_session_state(request)
    asked = request.GET.get("session")  # the session a page was shown in: another log-in is not it
    if state["session_ends_in"] is None or asked not in (None, state["session_id"]):
        return JsonResponse({"detail": SESSION_HAS_ENDED}, status=403)
    return JsonResponse({"ends_in": state["session_ends_in"], "extensible": state["session_extensible"]})


class LogoutView(auth_views.LogoutView):
    """POST only (Django's): a link can't log anyone out."""


# Both forms have a code and a passkey field: ids of their own, so each label names its own field.
EMAIL_FORM_IDS, PASSWORD_FORM_IDS = "id_email_%s", "id_password_%s"


def _account_page(request: HttpRequest, *, status: int = 200, **forms: Any) -> HttpResponse:
    user = cast("User", request.user)
    context = {
        "name_form": forms.get("name_form") or NameForm(initial={"full_name": user.full_name}),
        "email_form": forms.get("email_form") or EmailChangeForm(user=user, auto_id=EMAIL_FORM_IDS),
        "password_form": forms.get("password_form") or ReauthPasswordChangeForm(user, auto_id=PASSWORD_FORM_IDS),
        "events": SecurityEvent.objects.filter(user=user)[:10],
    }
    return render(request, "users/account.html", context, status=status)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def account(request: HttpRequest) -> HttpResponse:
    """Change full name, address (pending until its link is used) or password."""
    if request.method == "GET":
        return _account_page(request)
    if wait := throttle_wait(request, [AccountThrottle]):
        return too_many(request, wait)
    user = cast("User", request.user)
    which = request.POST.get("form")
    if which == "name":
        form = NameForm(request.POST)
        if not form.is_valid():
            return _account_page(request, status=400, name_form=form)
        accounts.profile_update(user=user, full_name=form.cleaned_data["full_name"])
        messages.success(request, "Your name is changed.")
    elif which == "email":
        email_form = EmailChangeForm(request.POST, user=user, auto_id=EMAIL_FORM_IDS)
        if not email_form.is_valid():
            return _account_page(request, status=400, email_form=email_form)
        data = email_form.cleaned_data
        refused = reauthenticate_or_why(request, data["current_password"], data.get("code"), data.get("credential"))
        if refused is not None:
            field, message = refused
            email_form.add_error("current_password" if field == "old_password" else field, message)
            return _account_page(request, status=400, email_form=email_form)
        accounts.email_change_request(user=user, new_email=email_form.cleaned_data["email"])
        messages.success(
            request, "We sent a link to the new address. Until you use it, your account keeps its current address."
        )
    elif which == "password":
        password_form = ReauthPasswordChangeForm(
            user, request.POST, check=partial(reauthenticate_or_why, request), auto_id=PASSWORD_FORM_IDS
        )
        if not password_form.is_valid():
            return _account_page(request, status=400, password_form=password_form)
        try:
            accounts.password_change(user=user, new_password=password_form.cleaned_data["new_password1"])
        except ValidationError as exc:
            password_form.add_error(None, exc)
            return _account_page(request, status=400, password_form=password_form)
        except WrongPassword:  # another change of the password won the race
            password_form.add_error("old_password", "That is not your current password.")
            return _account_page(request, status=400, password_form=password_form)
        update_session_auth_hash(request, user)  # this browser stays logged in; every other session ends
        messages.success(request, "Your password is changed. Every other session was logged out.")
    return redirect("account")


PROOF_MISSING = "Give a code from your authenticator app or one of your recovery codes, or use your passkey."
PROOF_WRONG = (
    "That code is wrong or was used already (a code works once: wait for your app's next one), "
    "or the passkey's answer was refused."
)


def reauthenticate_or_why(
    request: HttpRequest, password: str | None, code: str | None, credential: dict[str, Any] | None = None
) -> tuple[str, str] | None:
    """None if the current password (and the second factor, once the user has one) is right; else
    the field at fault and what to say (a wrong one counts as a failed log-in)."""
    try:
        reauth.reauthenticate(
            request=request, user=cast("User", request.user), password=password, code=code, credential=credential
        )
    except LockedOut:
        return "old_password", locked_out_words(request, reset_hint=False)  # a step-up: no password was typed to log in
    except WrongPassword:
        return "old_password", "That is not your current password."
    except ProofMissing:
        return "code", PROOF_MISSING
    except WrongProof:
        return "code", PROOF_WRONG
    # A new session id after a re-authentication, as after a log-in (ASVS 7.2.4): a session id
    # someone copied before it is good for nothing from here on (a review).
    request.session.cycle_key()
    return None


def _reset_invalid(request: HttpRequest) -> HttpResponse:
    return render(request, "users/reset_password_invalid.html", {"form": PasswordResetRequestForm()}, status=400)


@never_cache
@require_http_methods(["GET", "POST"])
def reset_password(request: HttpRequest) -> HttpResponse:
    """Without ``uid`` and ``token``: ask for a link. With them: choose the new password."""
    response = _reset_password(request)
    # The URL carries the token: a Referer from this page may hold the origin at most.
    response["Referrer-Policy"] = "strict-origin"
    return response


def _reset_password(request: HttpRequest) -> HttpResponse:
    source = request.POST if request.method == "POST" else request.GET
    uid, token = source.get("uid"), source.get("token")
    if uid is None and token is None:
        return _reset_request(request)
    if request.method == "POST" and (wait := throttle_wait(request, [PasswordResetThrottle])):
        return too_many(request, wait)
    try:
        user = accounts.password_reset_user(uid=uid or "", token=token or "")
    except InvalidToken:
        return _reset_invalid(request)
    form = ResetSetPasswordForm(user, request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        # A reset never bypasses the second factor; refused for its proof, the link stays usable.
        proof = form.cleaned_data.get("code"), form.cleaned_data.get("credential")
        if "code" in form.fields and (refused := _second_factor(request, user, *proof)):
            form.add_error("code", refused)
            context = {"form": form, "uid": uid, "token": token}
            return render(request, "users/reset_password_confirm.html", context, status=400)
        try:
            accounts.password_reset_confirm(
                uid=uid or "", token=token or "", new_password=form.cleaned_data["new_password1"]
            )
        except InvalidToken:
            return _reset_invalid(request)
        except ValidationError as exc:
            form.add_error("new_password1", exc)
        else:
            return render(request, "users/reset_password_done.html")
    context = {"form": form, "uid": uid, "token": token}
    return render(request, "users/reset_password_confirm.html", context, status=400 if form.errors else 200)


def _second_factor(request: HttpRequest, user: User, code: str | None, credential: dict[str, Any] | None) -> str | None:
    try:
        reauth.reauthenticate(
            request=request, user=user, password=None, code=code, credential=credential, password_needed=False
        )
    except LockedOut:
        return locked_out_words(request, reset_hint=False)  # this is the reset
    except ProofMissing:
        return PROOF_MISSING
    except WrongProof:
        return PROOF_WRONG
    return None


@never_cache
@require_http_methods(["POST"])
def reset_password_challenge(request: HttpRequest) -> JsonResponse:
    """Options for the passkey's answer on the reset page (the link's ``uid`` and ``token`` say whose).
    Only a link holder learns anything here (a dead link, or no passkey: the form says as much)."""
    if wait := throttle_wait(request, [PasswordResetThrottle]):
        return JsonResponse({"detail": "Too many requests."}, status=429, headers={"Retry-After": str(wait)})
    try:
        user = accounts.password_reset_user(uid=request.POST.get("uid", ""), token=request.POST.get("token", ""))
    except InvalidToken:
        return JsonResponse({"detail": "This link is invalid or has expired."}, status=400)
    return passkey_options_answer(user, passkeys.Purpose.RESET)


def passkey_options_answer(user: User, ceremony: str) -> JsonResponse:
    """The options for ``user``'s passkey as the second factor of ``ceremony`` (``passkeys.CEREMONIES``)."""
    if mfa.PASSKEY not in mfa.methods(user=user):
        return JsonResponse({"detail": "You have no passkey: use a code."}, status=400)
    return JsonResponse({"options": passkeys.authentication_options(user=user, ceremony=ceremony)})


def _reset_request(request: HttpRequest) -> HttpResponse:
    if request.method == "POST" and (
        wait := throttle_wait(request, [PasswordResetThrottle, PasswordResetAddressThrottle])
    ):
        return too_many(request, wait)
    form = PasswordResetRequestForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        accounts.password_reset_request(email=form.cleaned_data["email"])
        return render(request, "users/reset_password_sent.html")
    return render(request, "users/reset_password.html", {"form": form}, status=400 if form.errors else 200)

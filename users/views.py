"""HTML pages: the sign-up form and the verification link's confirm page."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from users.auth import wait_words
from users.errors import InvalidLink
from users.forms import ResendVerificationForm, SignupForm, VerifyEmailForm
from users.services import links
from users.services import signup as signups
from users.throttles import ResendAddressThrottle, ResendThrottle, SignupThrottle, VerifyThrottle, throttle_wait


def too_many(request: HttpRequest, wait: int) -> HttpResponse:
    response = render(request, "users/too_many_requests.html", {"wait": wait_words(wait)}, status=429)
    response["Retry-After"] = str(wait)
    return response


@never_cache
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.method == "POST" and (wait := throttle_wait(request, [SignupThrottle])):
        return too_many(request, wait)
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            signups.user_create(
                username=data["username"],
                full_name=data["full_name"],
                email=data["email"],
                password=data["password1"],
            )
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                for message in messages:
                    form.add_error(field, message)
        else:
            return redirect("signup-done")
    return render(request, "users/signup.html", {"form": form}, status=400 if form.errors else 200)


@never_cache
@require_http_methods(["GET"])
def signup_done(request: HttpRequest) -> HttpResponse:
    return render(request, "users/signup_done.html")


def _invalid(request: HttpRequest) -> HttpResponse:
    return render(request, "users/verify_email_invalid.html", {"form": ResendVerificationForm()}, status=400)


@never_cache
@require_http_methods(["GET", "POST"])
def verify_email(request: HttpRequest) -> HttpResponse:
    """GET shows a confirm button (mail scanners follow links); only the POST consumes the code."""
    response = _verify_email(request)
    # The URL carries the code, so a Referer from this page may hold the origin at most. Not
    # "no-referrer": browsers then send "Origin: null" with the form POST and CSRF refuses it.
    response["Referrer-Policy"] = "strict-origin"
    return response


def _verify_email(request: HttpRequest) -> HttpResponse:
    if wait := throttle_wait(request, [VerifyThrottle]):  # GET checks the code too
        return too_many(request, wait)
    form = VerifyEmailForm(request.POST if request.method == "POST" else request.GET)
    if not form.is_valid():
        return _invalid(request)
    verification_id, code = form.cleaned_data["email_id"], form.cleaned_data["secret_code"]
    try:
        if request.method == "POST":
            user = links.email_verify(verification_id=verification_id, code=code)
            return render(request, "users/verify_email_done.html", {"email": user.email})
        links.verification_check(verification_id=verification_id, code=code)
    except InvalidLink:
        return _invalid(request)
    return render(request, "users/verify_email_confirm.html", {"form": form})


@never_cache
@require_http_methods(["GET", "POST"])
def resend_verification(request: HttpRequest) -> HttpResponse:
    """Ask for a new link. The answer is the same whether or not the address is known."""
    if request.method == "POST" and (wait := throttle_wait(request, [ResendThrottle, ResendAddressThrottle])):
        return too_many(request, wait)
    form = ResendVerificationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        signups.verification_resend_request(email=form.cleaned_data["email"])
        return render(request, "users/resend_done.html")
    return render(request, "users/resend.html", {"form": form}, status=400 if form.errors else 200)

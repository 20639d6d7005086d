"""Response headers every answer of a kind gets."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_cache_control


class ApiNoStore:
    """Every JSON API answer is ``Cache-Control: no-store``: log-ins carry tokens, the TOTP set-up its
    secret, recovery codes are shown once, and the rest is one person's data (OWASP ASVS 14.3.2,
    RFC 6749 §5.1). A cache between the client and us, or the client's own, must keep none of it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.path_info.startswith("/api/"):  # behind a SCRIPT_NAME prefix too
            patch_cache_control(response, no_store=True, private=True)
        return response


# Browser features no page of ours uses, refused to any script that might run in one (ASVS 3.4:
# a policy for every response). WebAuthn keeps its default, this origin only.
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"


class BrowserPolicies:
    """``Permissions-Policy`` and ``Cross-Origin-Resource-Policy: same-origin`` on every answer:
    no other site embeds our pages' resources or answers (a review, ASVS 3.4 at Level 3)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        return response

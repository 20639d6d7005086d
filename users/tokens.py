"""Verification codes: an HMAC of ``(verification id, nonce)`` under the SECRET_KEY.

The database keeps only the random nonce; the code is recomputed when the email is rendered and
when a link is checked, so the raw code exists nowhere but in the email. 256-bit HMAC-SHA256,
URL-safe base64 (43 characters); the nonce has 256 bits from ``secrets``.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.http import urlsafe_base64_encode

_KEY_SALT = "users.email_verification"
# Anything longer is not one of our codes; don't spend HMACs on it.
MAX_CODE_LENGTH = 64


def new_nonce() -> str:
    return secrets.token_urlsafe(32)


def make_code(verification_id: int, nonce: str, *, secret: str | None = None) -> str:
    digest = salted_hmac(_KEY_SALT, f"{verification_id}:{nonce}", secret=secret, algorithm="sha256").digest()
    return urlsafe_base64_encode(digest)


def check_code(verification_id: int, nonce: str, code: str) -> bool:
    """Constant-time check against the current key and any ``SECRET_KEY_FALLBACKS``."""
    if not code or len(code) > MAX_CODE_LENGTH:
        return False
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    matched = False
    for key in keys:
        matched |= constant_time_compare(make_code(verification_id, nonce, secret=key), code)
    return matched

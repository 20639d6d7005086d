"""The authenticator-app factor (RFC 6238: SHA-1, 6 digits, 30 s steps).

A code is accepted for the current step and one on either side, and only for a step later than the
last one accepted: moving ``last_step`` forward is one conditional UPDATE, so of two requests with
the same code (or two codes of one step) exactly one wins.
"""

from __future__ import annotations

import hmac
import io
import logging
import time
from typing import NamedTuple
from urllib.parse import quote

import pyotp
import segno
from django.conf import settings
from django.db.models import Q

from users.mfa import crypto
from users.models import TotpDevice, User

logger = logging.getLogger(__name__)

DIGITS, PERIOD, WINDOW = 6, 30, 1


def secret_new() -> str:
    return pyotp.random_base32(length=32)  # 160 bits, RFC 4226's recommendation


def provisioning_uri(*, user: User, secret: str) -> str:
    issuer = settings.SITE_NAME
    label = quote(f"{issuer}:{user.username}")
    return (
        f"otpauth://totp/{label}?secret={secret}&issuer={quote(issuer)}&algorithm=SHA1&digits={DIGITS}&period={PERIOD}"
    )


def qr_svg(uri: str) -> str:
    """The QR code as an SVG document with its namespace: shown inline, through ``<img>`` or as a
    ``data:`` URI alike (segno's ``svg_inline`` leaves the namespace out, and a browser then shows
    an ``<img>`` of it as a broken image: a review found the set-up page's QR code empty)."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", xmldecl=False, scale=4)
    return out.getvalue().decode()


def current_step(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // PERIOD)


def is_code(code: str) -> bool:
    return len(code) == DIGITS and code.isascii() and code.isdigit()


def matching_step(*, secret: str, code: str, now: float | None = None) -> int | None:
    """The step within the window whose code is ``code``, or None."""
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD)
    step = current_step(now)
    found = None
    for candidate in (step - WINDOW, step, step + WINDOW):  # every one compared: same time either way
        if hmac.compare_digest(totp.generate_otp(candidate), code):
            found = candidate
    return found


def verify(*, device: TotpDevice, code: str, now: float | None = None) -> bool:
    """True if ``code`` is right for a step after the last accepted one, which it becomes."""
    if not is_code(code):
        return False
    try:
        secret = crypto.decrypt(device.secret)
    except crypto.InvalidToken:  # its key left the chain too early: the app can't be checked
        logger.error(
            "TOTP secret unreadable: no key of MFA_ENCRYPTION_KEY's chain reads it; the code is refused "
            "(recovery codes and passkeys still work; staff reset the factors)",
            extra={"user_id": device.user_id},
        )
        return False
    step = matching_step(secret=secret, code=code, now=now)
    if step is None:
        return False
    claimed = (
        TotpDevice.objects.filter(pk=device.pk)
        .filter(Q(last_step__isnull=True) | Q(last_step__lt=step))
        .update(last_step=step)
    )
    if claimed:
        device.last_step = step
    return bool(claimed)


class Rotated(NamedTuple):
    rotated: int
    unreadable_user_ids: list[int]


def secrets_rotate() -> Rotated:
    """Every TOTP secret encrypted again under the current key (``users.mfa.crypto``), so that an
    older key can leave the chain. One conditional UPDATE per device: a secret replaced meanwhile
    (a new set-up) is left as it is. ``unreadable_user_ids``: users whose secret no key of the chain
    reads (they need a staff reset of their factors)."""
    rotated, unreadable = 0, []
    devices = TotpDevice.objects.order_by("pk").values_list("pk", "user_id", "secret")
    for pk, user_id, secret in devices.iterator(chunk_size=500):
        try:
            fresh = crypto.rotate(secret)
        except crypto.InvalidToken:
            unreadable.append(user_id)
            continue
        rotated += TotpDevice.objects.filter(pk=pk, secret=secret).update(secret=fresh)
    return Rotated(rotated, unreadable)

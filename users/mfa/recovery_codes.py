"""Recovery codes: ten per user, 12 characters of an alphabet without look-alikes (no 0/O, 1/I/L),
shown once as ``XXXX-XXXX-XXXX``; stored as an HMAC-SHA256 with a purpose of their own under the
second factor's key (``users.mfa.crypto``: a code made before a key rotation works while the old key
is among the fallbacks), and used once: one conditional UPDATE, so of two concurrent requests with
one code exactly one wins."""

from __future__ import annotations

import secrets

from django.utils import timezone

from users.mfa import crypto
from users.models import RecoveryCode, User

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
LENGTH, COUNT, GROUP = 12, 10, 4
_PURPOSE = "users.mfa.recovery_codes"


def normalize(code: str) -> str:
    return "".join(code.split()).replace("-", "").upper()


def looks_like(code: str) -> bool:
    value = normalize(code)
    return len(value) == LENGTH and all(char in ALPHABET for char in value)


def _hash(code: str) -> str:
    return crypto.digest(_PURPOSE, normalize(code))


def _new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return "-".join(raw[i : i + GROUP] for i in range(0, LENGTH, GROUP))


def codes_replace(*, user: User) -> list[str]:
    """Ten new codes for ``user`` (the old ones stop working); the caller's transaction."""
    RecoveryCode.objects.filter(user=user).delete()
    codes = [_new_code() for _ in range(COUNT)]
    RecoveryCode.objects.bulk_create(RecoveryCode(user=user, code_hash=_hash(code)) for code in codes)
    return codes


def codes_delete(*, user: User) -> int:
    return RecoveryCode.objects.filter(user=user).delete()[0]


def codes_left(*, user: User) -> int:
    return RecoveryCode.objects.filter(user=user, used_at__isnull=True).count()


def use(*, user: User, code: str) -> bool:
    """True if ``code`` is one of the user's unused codes — now used."""
    if not looks_like(code):
        return False
    return bool(
        RecoveryCode.objects.filter(
            user=user, code_hash__in=crypto.digests(_PURPOSE, normalize(code)), used_at__isnull=True
        ).update(used_at=timezone.now())
    )

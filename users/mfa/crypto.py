"""The second factor's secrets at rest, under one chain of keys.

The current key is ``MFA_ENCRYPTION_KEY`` or, when that is empty, ``SECRET_KEY``; every older key
still reads: ``MFA_ENCRYPTION_KEY_FALLBACKS``, then ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS`` (a
deployment that sets ``MFA_ENCRYPTION_KEY`` later keeps what was written under the secret key).

- TOTP secrets: Fernet (AES-128-CBC + HMAC-SHA256) under a key HKDF derives from the current key
  with a purpose label of its own (never the key that signs sessions); ``rotate`` re-encrypts one
  under the current key (``manage.py rotate_mfa_secrets``).
- Recovery codes: an HMAC-SHA256 under the current key (``digests`` gives one per key of the chain,
  so a code made before a rotation still works while its key is in the chain).
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.utils.crypto import salted_hmac

PURPOSE = b"simplebank users: TOTP secrets at rest"
__all__ = ["InvalidToken", "decrypt", "digest", "digests", "encrypt", "keys", "rotate"]


def keys() -> list[str]:
    """The current key first, then every older one that still reads (no repeats)."""
    current = settings.MFA_ENCRYPTION_KEY or settings.SECRET_KEY
    older = [*settings.MFA_ENCRYPTION_KEY_FALLBACKS, settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    return list(dict.fromkeys([current, *older]))


def _fernet_key(material: str) -> bytes:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=PURPOSE).derive(material.encode())
    return base64.urlsafe_b64encode(key)


def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(_fernet_key(key)) for key in keys()])


def encrypt(secret: str) -> bytes:
    return _fernet().encrypt(secret.encode())


def decrypt(token: bytes) -> str:
    return _fernet().decrypt(bytes(token)).decode()


def rotate(token: bytes) -> bytes:
    """``token`` encrypted again under the current key (``InvalidToken`` if no key of the chain reads it)."""
    return _fernet().rotate(bytes(token))


def digest(purpose: str, value: str, key: str | None = None) -> str:
    """The keyed hash of ``value`` under ``key`` (the current one by default)."""
    return salted_hmac(purpose, value, secret=key or keys()[0], algorithm="sha256").hexdigest()


def digests(purpose: str, value: str) -> list[str]:
    """The keyed hash of ``value`` under each key of the chain, the current one first."""
    return [digest(purpose, value, key) for key in keys()]

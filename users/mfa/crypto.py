"""TOTP secrets encrypted at rest: Fernet (AES-128-CBC + HMAC-SHA256) under a key that HKDF derives
from ``MFA_ENCRYPTION_KEY`` or, when that is empty, from ``SECRET_KEY`` with a purpose label of its
own (so the key is never the one that signs sessions). ``SECRET_KEY_FALLBACKS`` still decrypt."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

PURPOSE = b"simplebank users: TOTP secrets at rest"


def _fernet_key(material: str) -> bytes:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=PURPOSE).derive(material.encode())
    return base64.urlsafe_b64encode(key)


def _fernet() -> MultiFernet:
    if settings.MFA_ENCRYPTION_KEY:
        keys = [settings.MFA_ENCRYPTION_KEY]
    else:
        keys = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    return MultiFernet([Fernet(_fernet_key(key)) for key in keys])


def encrypt(secret: str) -> bytes:
    return _fernet().encrypt(secret.encode())


def decrypt(token: bytes) -> str:
    return _fernet().decrypt(bytes(token)).decode()

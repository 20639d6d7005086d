"""Passkeys (WebAuthn), with py_webauthn doing every check of the ceremonies: the options the
browser gets, and the verification of what the authenticator answered.

The relying party id is ``SITE_URL``'s host (a domain, or an IP such as ``127.0.0.1`` in
development) and the expected origin ``SITE_URL``'s origin. Each ceremony's challenge is a
``WebAuthnChallenge`` row, spent by the first answer that names it: a replayed answer, an answer
to another user's or another ceremony's options (a log-in's, a step-up's, a reset's and a
registration's are all apart), or one older than five minutes is refused.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    decode_credential_public_key,
    decoded_public_key_to_cryptography,
    parse_authentication_credential_json,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from users.errors import WrongProof
from users.models import Passkey, User, WebAuthnChallenge

CHALLENGE_LIFETIME = timedelta(minutes=5)
TIMEOUT_MS = int(CHALLENGE_LIFETIME.total_seconds() * 1000)
Purpose = WebAuthnChallenge.Purpose
# What a garbage ``credential`` makes the parsers raise (py_webauthn's own errors and the
# structural ones of decoding base64url, JSON and CBOR): each is a wrong proof, never a 500.
# RecursionError: JSON nested thousands deep (clientDataJSON is JSON inside base64url).
MALFORMED = (
    WebAuthnException,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    IndexError,
    OverflowError,
    RecursionError,
)
# A browser's clientDataJSON is a few hundred bytes: anything much longer is refused unparsed.
CLIENT_DATA_MAX = 4096


@dataclass(frozen=True)
class RelyingParty:
    id: str
    origin: str
    name: str


def relying_party() -> RelyingParty:
    """From ``SITE_URL``: its host (without the port) and its origin (scheme, host, port)."""
    parts = urlsplit(settings.SITE_URL)
    host = parts.hostname or "localhost"
    return RelyingParty(id=host, origin=f"{parts.scheme}://{parts.netloc}", name=settings.SITE_NAME)


def _user_handle(user: User, key: str | None = None) -> bytes:
    """The WebAuthn user handle: stable per user, no personal data (an HMAC of the primary key)."""
    return salted_hmac("users.mfa.passkeys.user_handle", str(user.pk), secret=key, algorithm="sha256").digest()


def _is_user_handle(user: User, handle: bytes) -> bool:
    """Whether an assertion's ``userHandle`` is ``user``'s, under the secret key or a fallback (a
    passkey made before a key rotation keeps the handle it was given)."""
    keys = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    return any(constant_time_compare(handle, _user_handle(user, key)) for key in keys)


def _descriptors(user: User) -> list[PublicKeyCredentialDescriptor]:
    found = []
    for credential_id, transports in Passkey.objects.filter(user=user).values_list("credential_id", "transports"):
        known = [AuthenticatorTransport(t) for t in transports if t in set(AuthenticatorTransport)]
        found.append(PublicKeyCredentialDescriptor(id=bytes(credential_id), transports=known or None))
    return found


def _challenge_store(*, purpose: str, user: User | None, challenge: bytes, token: str | None = None) -> None:
    now = timezone.now()
    WebAuthnChallenge.objects.filter(expires_at__lt=now).delete()  # the dead ones, everyone's
    WebAuthnChallenge.objects.create(
        purpose=purpose,
        user=user,
        challenge=challenge,
        token_hash=_hash(token) if token else None,
        expires_at=now + CHALLENGE_LIFETIME,
    )


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _challenge_spend(*, purpose: str, challenge: bytes, user: User | None = None, token: str | None = None) -> bool:
    """Spend the live challenge row of this ceremony; False if there is none (used, expired,
    another user's or another ceremony's)."""
    rows = WebAuthnChallenge.objects.filter(
        purpose=purpose, challenge=challenge, used_at__isnull=True, expires_at__gt=timezone.now()
    )
    rows = rows.filter(token_hash=_hash(token)) if token is not None else rows.filter(user=user)
    return bool(rows.update(used_at=timezone.now()))


def _client_challenge(client_data_json: bytes) -> bytes:
    if len(client_data_json) > CLIENT_DATA_MAX:
        raise ValueError("clientDataJSON too long")
    return parse_client_data_json(client_data_json).challenge


# --- Registration --------------------------------------------------------------------------------
def registration_options(*, user: User) -> dict[str, Any]:
    """``PublicKeyCredentialCreationOptionsJSON`` for a new passkey of ``user`` (their existing
    ones excluded; a resident key and user verification preferred)."""
    rp = relying_party()
    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        user_id=_user_handle(user),
        user_name=user.username,
        user_display_name=user.full_name or user.username,
        timeout=TIMEOUT_MS,
        exclude_credentials=_descriptors(user),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
    )
    # Only the last options can be answered (the contract's "answering the last options").
    WebAuthnChallenge.objects.filter(purpose=Purpose.REGISTRATION, user=user, used_at__isnull=True).delete()
    _challenge_store(purpose=Purpose.REGISTRATION, user=user, challenge=options.challenge)
    return dict(json.loads(options_to_json(options)))


# Passkeys one user may have: each is a way in, listed in every log-in's options (a review: no cap).
PASSKEYS_MAX = 20
PASSKEYS_FULL = f"You have {PASSKEYS_MAX} passkeys: remove one you no longer use first."
CREDENTIAL_ID_MAX = 1023  # bytes (WebAuthn Level 3, credential ID)
PUBLIC_KEY_MAX = 4096  # bytes of COSE key: RSA-4096 takes ~550, ML-DSA-87 ~2.6 k


def register(*, user: User, name: str, credential: dict[str, Any]) -> Passkey:
    """Verify the authenticator's answer to ``registration_options`` and keep the passkey.
    ``WrongProof`` for a bad, replayed or foreign attestation, or a credential already known."""
    rp = relying_party()
    try:
        parsed = parse_registration_credential_json(credential)
        challenge = _client_challenge(parsed.response.client_data_json)
    except MALFORMED:
        raise WrongProof from None
    # Spent before it is checked, and kept spent when the check fails: a challenge is tried once.
    if not _challenge_spend(purpose=Purpose.REGISTRATION, challenge=challenge, user=user):
        raise WrongProof
    try:
        verified = verify_registration_response(
            credential=parsed, expected_challenge=challenge, expected_rp_id=rp.id, expected_origin=rp.origin
        )
    except MALFORMED:
        raise WrongProof from None
    # py_webauthn keeps what the attestation carries: a credential id past WebAuthn's 1023 bytes
    # (past ~2.7 kB PostgreSQL's index refused it: a 500), and "keys" that are none — a point off its
    # curve, a megabyte of COSE — which could never sign yet would count as a second factor (a review).
    if len(verified.credential_id) > CREDENTIAL_ID_MAX or len(verified.credential_public_key) > PUBLIC_KEY_MAX:
        raise WrongProof
    try:
        decoded_public_key_to_cryptography(decode_credential_public_key(verified.credential_public_key))
    except MALFORMED:
        raise WrongProof from None
    transports = [str(t.value) for t in (parsed.response.transports or [])]
    if Passkey.objects.filter(user=user).count() >= PASSKEYS_MAX:  # one registration challenge at a time
        raise WrongProof
    try:
        with transaction.atomic():
            return Passkey.objects.create(
                user=user,
                name=name,
                credential_id=verified.credential_id,
                public_key=verified.credential_public_key,
                sign_count=verified.sign_count,
                transports=transports,
            )
    except IntegrityError:  # this authenticator's credential is registered already
        raise WrongProof from None


# --- Authentication ------------------------------------------------------------------------------
# The ceremonies where a known user's passkey is the second factor; each answers only its own options.
CEREMONIES = (Purpose.LOGIN, Purpose.STEP_UP, Purpose.RESET)
CHALLENGES_LIVE = 10


def authentication_options(*, user: User, ceremony: str) -> dict[str, Any]:
    """``PublicKeyCredentialRequestOptionsJSON`` allowing ``user``'s passkeys as the second factor
    of ``ceremony`` (the log-in's second step, a step-up or a password reset)."""
    if ceremony not in CEREMONIES:
        raise ValueError(f"not a second-factor ceremony: {ceremony!r}")
    options = generate_authentication_options(
        rp_id=relying_party().id,
        timeout=TIMEOUT_MS,
        allow_credentials=_descriptors(user),
        user_verification=UserVerificationRequirement.PREFERRED,
    )
    # At most CHALLENGES_LIVE unanswered options per user and ceremony (the oldest go first): a
    # log-in's options come with the right password alone, unthrottled.
    unanswered = WebAuthnChallenge.objects.filter(purpose=ceremony, user=user, used_at__isnull=True)
    unanswered.exclude(pk__in=unanswered.order_by("-pk").values("pk")[: CHALLENGES_LIVE - 1]).delete()
    _challenge_store(purpose=ceremony, user=user, challenge=options.challenge)
    return dict(json.loads(options_to_json(options)))


def discoverable_options() -> tuple[dict[str, Any], str]:
    """Options for a log-in with a discoverable passkey (no user yet: an empty allow list, user
    verification required) and the opaque ``passkey_token`` that names this ceremony."""
    options = generate_authentication_options(
        rp_id=relying_party().id,
        timeout=TIMEOUT_MS,
        allow_credentials=[],
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    token = secrets.token_urlsafe(32)
    _challenge_store(purpose=Purpose.DISCOVERABLE, user=None, challenge=options.challenge, token=token)
    return dict(json.loads(options_to_json(options))), token


def credential_owner(*, credential: Any) -> User | None:
    """The account whose passkey ``credential`` names (an assertion's ``rawId``), if any: wrong
    assertions count as failed log-ins of that account."""
    try:
        raw_id = parse_authentication_credential_json(credential).raw_id
    except MALFORMED:
        return None
    passkey = Passkey.objects.filter(credential_id=raw_id).select_related("user").first()
    return passkey.user if passkey is not None else None


def verify(*, credential: Any, user: User | None = None, ceremony: str | None = None, token: str | None = None) -> User:
    """Verify an assertion: of ``user``'s passkeys against an ``authentication_options`` challenge
    of that ``ceremony``, or (``token``) of any passkey against the discoverable ceremony ``token``
    names, where user verification is required. The challenge is spent either way; on success the
    sign count and ``last_used_at`` move. Returns the passkey's user; ``WrongProof`` otherwise."""
    if token is None and ceremony not in CEREMONIES:
        raise ValueError(f"not a second-factor ceremony: {ceremony!r}")
    rp = relying_party()
    try:
        parsed = parse_authentication_credential_json(credential)
        challenge = _client_challenge(parsed.response.client_data_json)
    except MALFORMED:
        raise WrongProof from None
    purpose = Purpose.DISCOVERABLE if token is not None else str(ceremony)
    if not _challenge_spend(purpose=purpose, challenge=challenge, user=user, token=token):  # spent, right or wrong
        raise WrongProof
    with transaction.atomic():
        # The passkey's row alone ("of self"): the user's row is locked user-first by a factor change
        # (a removal deleting this passkey); locking both here, passkey first, deadlocked with it.
        passkeys = (
            Passkey.objects.select_for_update(of=("self",)).select_related("user").filter(credential_id=parsed.raw_id)
        )
        passkey = (passkeys.filter(user=user) if token is None else passkeys).first()
        if passkey is None:
            raise WrongProof
        # WebAuthn §7.2 step 6: a user handle, when the authenticator gives one, is the credential's
        # owner's (a review: any handle was taken, the credential id alone deciding).
        handle = parsed.response.user_handle
        if handle is not None and not _is_user_handle(passkey.user, bytes(handle)):
            raise WrongProof
        try:
            verified = verify_authentication_response(
                credential=parsed,
                expected_challenge=challenge,
                expected_rp_id=rp.id,
                expected_origin=rp.origin,
                credential_public_key=bytes(passkey.public_key),
                credential_current_sign_count=passkey.sign_count,
                require_user_verification=token is not None,
            )
        except MALFORMED:
            raise WrongProof from None
        Passkey.objects.filter(pk=passkey.pk).update(sign_count=verified.new_sign_count, last_used_at=timezone.now())
    setattr(passkey.user, PROVEN_BY, (PASSKEY_PROOF, passkey.pk))
    return passkey.user


# What a log-in proved the second factor with, kept on the user it returns: the session that follows
# checks, under the user's lock, that it still stands (``users.services.sessions``).
PROVEN_BY, PASSKEY_PROOF, TOTP_PROOF, RECOVERY_PROOF = "_proven_by", "passkey", "totp", "recovery_code"


def has_passkey(*, user: User) -> bool:
    return Passkey.objects.filter(user=user).exists()

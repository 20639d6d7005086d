"""Passkeys (``users.mfa.passkeys``) against a software authenticator: registration, assertions,
and every answer that must be refused (replayed, another user's challenge, another origin, a
counter that went back, garbage)."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest
from django.utils import timezone
from webauthn.helpers import bytes_to_base64url

from users.errors import WrongProof
from users.mfa import flows, passkeys
from users.models import Passkey, RecoveryCode, SecurityEvent, WebAuthnChallenge
from users.tests.authenticator import SoftAuthenticator
from users.tests.factories import UserFactory, with_totp

pytestmark = pytest.mark.django_db
SITE = "http://localhost:8000"
STEP = passkeys.Purpose.STEP_UP


@pytest.fixture(autouse=True)
def site(settings):
    settings.SITE_URL = SITE


def _registered(user, *, origin: str = SITE) -> tuple[SoftAuthenticator, Passkey]:
    device = SoftAuthenticator(origin=origin)
    options = passkeys.registration_options(user=user)
    return device, passkeys.register(user=user, name="phone", credential=device.create(options))


def test_relying_party_follows_site_url(settings):
    assert passkeys.relying_party().id == "localhost"
    assert passkeys.relying_party().origin == SITE
    settings.SITE_URL = "https://bank.example.com"
    assert (passkeys.relying_party().id, passkeys.relying_party().origin) == (
        "bank.example.com",
        "https://bank.example.com",
    )


def test_registration_options_exclude_existing_passkeys_and_prefer_resident_keys():
    user = UserFactory()
    _, passkey = _registered(user)
    options = passkeys.registration_options(user=user)
    assert options["rp"]["id"] == "localhost"
    assert options["authenticatorSelection"]["residentKey"] == "preferred"
    assert options["authenticatorSelection"]["userVerification"] == "preferred"
    assert [c["id"] for c in options["excludeCredentials"]] == [bytes_to_base64url(bytes(passkey.credential_id))]


def test_register_then_assert_moves_the_counter_and_last_used():
    user = UserFactory()
    device, passkey = _registered(user)
    assert passkey.last_used_at is None
    assert (
        passkeys.verify(
            credential=device.get(passkeys.authentication_options(user=user, ceremony=STEP)), user=user, ceremony=STEP
        )
        == user
    )
    passkey.refresh_from_db()
    assert passkey.sign_count == 1 and passkey.last_used_at is not None


def test_a_replayed_registration_is_refused():
    user = UserFactory()
    device = SoftAuthenticator(origin=SITE)
    answer = device.create(passkeys.registration_options(user=user))
    passkeys.register(user=user, name="phone", credential=answer)
    Passkey.objects.all().delete()
    with pytest.raises(WrongProof):
        passkeys.register(user=user, name="phone", credential=answer)
    assert not Passkey.objects.exists()


def test_an_answer_to_another_users_challenge_is_refused():
    ada, eve = UserFactory(), UserFactory()
    device = SoftAuthenticator(origin=SITE)
    with pytest.raises(WrongProof):  # Eve's authenticator answering options made for Ada
        passkeys.register(user=eve, name="stolen", credential=device.create(passkeys.registration_options(user=ada)))
    device_ada, _ = _registered(ada)
    with pytest.raises(WrongProof):  # Ada's assertion against a challenge issued to Eve
        passkeys.verify(
            credential=device_ada.get(passkeys.authentication_options(user=eve, ceremony=STEP)), user=ada, ceremony=STEP
        )


def test_a_replayed_assertion_is_refused():
    user = UserFactory()
    device, _ = _registered(user)
    answer = device.get(passkeys.authentication_options(user=user, ceremony=STEP))
    passkeys.verify(credential=answer, user=user, ceremony=STEP)
    with pytest.raises(WrongProof):
        passkeys.verify(credential=answer, user=user, ceremony=STEP)


def test_a_failed_assertion_still_spends_its_challenge():
    user = UserFactory()
    device, _ = _registered(user)
    options = passkeys.authentication_options(user=user, ceremony=STEP)
    with pytest.raises(WrongProof):
        passkeys.verify(credential=device.get(options, origin="https://evil.example"), user=user, ceremony=STEP)
    with pytest.raises(WrongProof):  # the right answer comes too late: the challenge was tried
        passkeys.verify(credential=device.get(options), user=user, ceremony=STEP)


def test_a_counter_that_goes_back_is_refused():
    user = UserFactory()
    device, _ = _registered(user)
    passkeys.verify(
        credential=device.get(passkeys.authentication_options(user=user, ceremony=STEP), sign_count=5),
        user=user,
        ceremony=STEP,
    )
    with pytest.raises(WrongProof):  # a clone of the authenticator
        passkeys.verify(
            credential=device.get(passkeys.authentication_options(user=user, ceremony=STEP), sign_count=3),
            user=user,
            ceremony=STEP,
        )


def test_an_expired_challenge_is_refused():
    user = UserFactory()
    device, _ = _registered(user)
    options = passkeys.authentication_options(user=user, ceremony=STEP)
    WebAuthnChallenge.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(WrongProof):
        passkeys.verify(credential=device.get(options), user=user, ceremony=STEP)


def test_a_signature_by_another_key_is_refused():
    user = UserFactory()
    device, _ = _registered(user)
    impostor = SoftAuthenticator(origin=SITE)
    impostor.credential_id = device.credential_id  # same id, another key
    with pytest.raises(WrongProof):
        passkeys.verify(
            credential=impostor.get(passkeys.authentication_options(user=user, ceremony=STEP)), user=user, ceremony=STEP
        )


@pytest.mark.parametrize(
    "garbage",
    [{}, {"id": "x"}, {"id": "!!", "rawId": "!!", "response": {}, "type": "public-key"}, {"response": "x"}],
)
def test_garbage_is_a_wrong_proof(garbage):
    user = UserFactory()
    device, _ = _registered(user)
    good = device.get(passkeys.authentication_options(user=user, ceremony=STEP))
    broken = copy.deepcopy(good)
    broken["response"]["clientDataJSON"] = "bm90IGpzb24"
    for credential in (garbage, broken):
        with pytest.raises(WrongProof):
            passkeys.verify(credential=credential, user=user, ceremony=STEP)
        with pytest.raises(WrongProof):
            passkeys.register(user=user, name="x", credential=credential)


def test_discoverable_log_in_needs_user_verification_and_its_own_token():
    user = UserFactory()
    device, _ = _registered(user)
    options, token = passkeys.discoverable_options()
    assert options["allowCredentials"] == [] and options["userVerification"] == "required"
    with pytest.raises(WrongProof):
        passkeys.verify(credential=device.get(options), token="another")
    options, token = passkeys.discoverable_options()
    assert passkeys.verify(credential=device.get(options), token=token) == user
    device.user_verification = False
    options, token = passkeys.discoverable_options()
    with pytest.raises(WrongProof):
        passkeys.verify(credential=device.get(options), token=token)


def test_a_first_passkey_brings_recovery_codes_and_the_last_takes_them():
    user = UserFactory()
    device = SoftAuthenticator(origin=SITE)
    added = flows.passkey_add(
        user=user, name="phone", credential=device.create(passkeys.registration_options(user=user))
    )
    assert added.recovery_codes is not None and len(added.recovery_codes) == 10
    assert flows.has_factor(user=user) and flows.methods(user=user) == ["passkey", "recovery_code"]
    assert SecurityEvent.objects.filter(user=user, kind="passkey_added").exists()
    flows.passkey_remove(user=user, passkey_id=added.passkey.pk)
    assert not flows.has_factor(user=user) and not RecoveryCode.objects.filter(user=user).exists()
    assert SecurityEvent.objects.filter(user=user, kind="passkey_removed").exists()


def test_a_passkey_beside_totp_issues_no_new_codes_and_its_removal_keeps_them():
    user = UserFactory()
    with_totp(user)
    flows.recovery_codes_regenerate(user=user)
    added = flows.passkey_add(
        user=user,
        name="key",
        credential=SoftAuthenticator(origin=SITE).create(passkeys.registration_options(user=user)),
    )
    assert added.recovery_codes is None
    assert flows.methods(user=user) == ["totp", "passkey", "recovery_code"]
    flows.passkey_remove(user=user, passkey_id=added.passkey.pk)
    assert RecoveryCode.objects.filter(user=user).count() == 10


def test_proof_verify_takes_a_credential():
    user = UserFactory()
    device, _ = _registered(user)
    options = passkeys.authentication_options(user=user, ceremony=STEP)
    assert flows.proof_verify(user=user, credential=device.get(options), ceremony=STEP)
    assert not flows.proof_verify(user=user, credential={"garbage": True}, ceremony=STEP)


@pytest.mark.parametrize("issued", passkeys.CEREMONIES)
def test_an_answer_to_one_ceremonys_options_is_refused_by_the_others(issued):
    """A log-in's passkey options answered and sent as a step-up's proof (or a reset's, or the other
    way round) is refused: each challenge is spent only by the ceremony it was issued for."""
    user = UserFactory()
    device, _ = _registered(user)
    for other in passkeys.CEREMONIES:
        if other != issued:
            answer = device.get(passkeys.authentication_options(user=user, ceremony=issued))
            with pytest.raises(WrongProof):
                passkeys.verify(credential=answer, user=user, ceremony=other)
    answer = device.get(passkeys.authentication_options(user=user, ceremony=issued))
    assert passkeys.verify(credential=answer, user=user, ceremony=issued) == user


def test_the_admin_says_a_passkey_only_user_has_a_factor():
    from django.contrib import admin

    from users.admin import UserAdmin
    from users.models import User

    user = UserFactory()
    page = UserAdmin(User, admin.site)
    assert page.second_factor(user) == "none"
    flows.passkey_add(
        user=user,
        name="phone",
        credential=SoftAuthenticator(origin=SITE).create(passkeys.registration_options(user=user)),
    )
    assert page.second_factor(user) == "1 passkey(s); 10 recovery code(s) left"


def test_only_the_last_registration_options_can_be_answered():
    user = UserFactory()
    device = SoftAuthenticator(origin=SITE)
    earlier = passkeys.registration_options(user=user)
    later = passkeys.registration_options(user=user)
    with pytest.raises(WrongProof):
        passkeys.register(user=user, name="phone", credential=device.create(earlier))
    assert passkeys.register(user=user, name="phone", credential=device.create(later)).name == "phone"


def test_unanswered_options_are_bounded_per_user_and_ceremony_the_newest_answering():
    user = UserFactory()
    device, _ = _registered(user)
    issued = [passkeys.authentication_options(user=user, ceremony=passkeys.Purpose.LOGIN) for _ in range(13)]
    passkeys.authentication_options(user=user, ceremony=STEP)
    live = WebAuthnChallenge.objects.filter(user=user, used_at__isnull=True)
    assert live.filter(purpose=passkeys.Purpose.LOGIN).count() == passkeys.CHALLENGES_LIVE
    assert live.filter(purpose=STEP).count() == 1
    with pytest.raises(WrongProof):
        passkeys.verify(credential=device.get(issued[0]), user=user, ceremony=passkeys.Purpose.LOGIN)
    assert passkeys.verify(credential=device.get(issued[-1]), user=user, ceremony=passkeys.Purpose.LOGIN) == user

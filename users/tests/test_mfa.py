"""The second factor's logic (``users.mfa``): the TOTP window and replay, recovery codes used once,
two concurrent uses of one code (exactly one wins), encryption at rest, the log-in token."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pyotp
import pytest
import time_machine
from cryptography import fernet
from django.db import connection
from django.utils import timezone

from users import policies
from users.errors import FactorStateError, InvalidToken, WrongProof
from users.mfa import crypto, flows, passkeys, totp
from users.models import MfaLoginToken, RecoveryCode, SecurityEvent, TotpDevice, User
from users.tests.factories import UserFactory, with_totp

STEP = passkeys.Purpose.STEP_UP  # any ceremony: a code is checked alike in each


def _enable(user: User) -> tuple[str, list[str]]:
    """TOTP on for ``user`` (confirmed with the code of the previous step, so the current and next
    ones are still usable); the secret and the recovery codes."""
    setup = flows.totp_setup(user=user)
    now = time.time()
    with time_machine.travel(now, tick=False):  # a 30 s step boundary can't fall between code and check
        codes = flows.totp_confirm(user=user, code=pyotp.TOTP(setup.secret).at(now - 30))
    return setup.secret, codes


def _code(secret: str, step: int) -> str:
    return pyotp.TOTP(secret).generate_otp(step)


@pytest.mark.django_db
def test_the_secret_is_encrypted_at_rest_and_named_nowhere():
    user = UserFactory()
    setup = flows.totp_setup(user=user)
    device = TotpDevice.objects.get(user=user)
    assert setup.secret.encode() not in bytes(device.secret)
    assert crypto.decrypt(device.secret) == setup.secret
    assert setup.secret not in str(device) and "pending" in str(device)
    assert setup.otpauth_uri.startswith("otpauth://totp/Simple%20Bank%3A")
    for part in (f"secret={setup.secret}", "issuer=Simple%20Bank", "algorithm=SHA1", "digits=6", "period=30"):
        assert part in setup.otpauth_uri
    assert setup.qr_svg.startswith("<svg")


@pytest.mark.django_db
def test_an_encryption_key_setting_encrypts_from_then_on_and_the_older_keys_still_read(settings):
    before = crypto.encrypt("JBSWY3DPEHPK3PXP")
    settings.MFA_ENCRYPTION_KEY = "a separate key for the second factor"
    after = crypto.encrypt("JBSWY3DPEHPK3PXP")
    assert crypto.decrypt(before) == crypto.decrypt(after) == "JBSWY3DPEHPK3PXP"
    settings.MFA_ENCRYPTION_KEY_FALLBACKS = [settings.MFA_ENCRYPTION_KEY]
    settings.MFA_ENCRYPTION_KEY = "the next key for the second factor"
    assert crypto.decrypt(after) == "JBSWY3DPEHPK3PXP"
    settings.MFA_ENCRYPTION_KEY_FALLBACKS = []
    with pytest.raises(fernet.InvalidToken):
        crypto.decrypt(after)  # a key that left the chain reads nothing
    assert crypto.decrypt(crypto.rotate(before)) == "JBSWY3DPEHPK3PXP"  # the secret key still reads


@pytest.mark.django_db
def test_totp_accepts_one_step_either_side_and_nothing_further():
    user = UserFactory()
    secret, _ = _enable(user)
    device = TotpDevice.objects.get(user=user)
    now = time.time()
    step = totp.current_step(now)
    TotpDevice.objects.filter(pk=device.pk).update(last_step=None)
    assert not totp.verify(device=device, code=_code(secret, step - 2), now=now)
    assert not totp.verify(device=device, code=_code(secret, step + 2), now=now)
    assert totp.verify(device=device, code=_code(secret, step - 1), now=now)
    assert totp.verify(device=device, code=_code(secret, step), now=now)
    assert totp.verify(device=device, code=_code(secret, step + 1), now=now)
    assert not totp.verify(device=device, code="12345", now=now)
    assert not totp.verify(device=device, code="abcdef", now=now)


@pytest.mark.django_db
def test_a_totp_code_is_refused_for_its_step_and_every_earlier_one():
    user = UserFactory()
    secret, _ = _enable(user)
    step = totp.current_step()
    assert flows.proof_verify(user=user, ceremony=STEP, code=_code(secret, step + 1))
    assert not flows.proof_verify(user=user, ceremony=STEP, code=_code(secret, step + 1))  # the replay
    assert not flows.proof_verify(user=user, ceremony=STEP, code=_code(secret, step))  # an earlier step


@pytest.mark.django_db
def test_confirming_turns_totp_on_with_ten_recovery_codes_of_an_unambiguous_alphabet():
    user = UserFactory()
    setup = flows.totp_setup(user=user)
    assert not flows.has_factor(user=user)  # pending
    with pytest.raises(WrongProof):
        flows.totp_confirm(user=user, code="000000" if pyotp.TOTP(setup.secret).now() != "000000" else "111111")
    codes = flows.totp_confirm(user=user, code=pyotp.TOTP(setup.secret).now())
    assert flows.has_factor(user=user)
    assert len(codes) == 10 and len(set(codes)) == 10
    for code in codes:
        raw = code.replace("-", "")
        assert len(raw) >= 10 and set(raw) <= set("23456789ABCDEFGHJKMNPQRSTUVWXYZ")
        assert not RecoveryCode.objects.filter(code_hash__icontains=raw).exists()
    assert SecurityEvent.objects.filter(user=user, kind="mfa_enabled").count() == 1
    with pytest.raises(FactorStateError):
        flows.totp_setup(user=user)  # on already


@pytest.mark.django_db
def test_a_recovery_code_works_once_in_any_case_and_spacing_and_new_codes_replace_the_old():
    user = UserFactory()
    _, codes = _enable(user)
    assert flows.proof_verify(user=user, ceremony=STEP, code=f" {codes[0].lower()} ")
    assert not flows.proof_verify(user=user, ceremony=STEP, code=codes[0])
    assert flows.status(user=user).recovery_codes_left == 9
    assert SecurityEvent.objects.filter(user=user, kind="recovery_code_used").count() == 1
    fresh = flows.recovery_codes_regenerate(user=user)
    assert not flows.proof_verify(user=user, ceremony=STEP, code=codes[1])
    assert flows.proof_verify(user=user, ceremony=STEP, code=fresh[1])


@pytest.mark.django_db
def test_turning_the_last_factor_off_takes_the_recovery_codes_with_it():
    user = UserFactory()
    _, codes = _enable(user)
    flows.totp_disable(user=user)
    assert not flows.has_factor(user=user)
    assert not RecoveryCode.objects.filter(user=user).exists()
    assert not flows.proof_verify(user=user, ceremony=STEP, code=codes[0])
    assert SecurityEvent.objects.filter(user=user, kind="mfa_disabled").count() == 1
    with pytest.raises(FactorStateError):
        flows.recovery_codes_regenerate(user=user)


@pytest.mark.django_db
def test_staff_reset_removes_every_factor():
    user = UserFactory()
    _enable(user)
    assert flows.factors_reset_by_staff(user=user)
    assert not TotpDevice.objects.filter(user=user).exists() and not RecoveryCode.objects.filter(user=user).exists()
    assert SecurityEvent.objects.filter(user=user, kind="mfa_reset_by_staff").count() == 1
    assert not flows.factors_reset_by_staff(user=user)


def _race(attempt: Callable[[], bool], *, threads: int = 4) -> list[bool]:
    """Run ``attempt`` in threads (one database connection each) released at once."""
    barrier, results = threading.Barrier(threads), []
    lock = threading.Lock()

    def run() -> None:
        try:
            barrier.wait()
            outcome = attempt()
            with lock:
                results.append(outcome)
        finally:
            connection.close()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results


@pytest.mark.django_db(transaction=True)
def test_of_concurrent_requests_with_one_totp_code_exactly_one_wins():
    user = UserFactory()
    secret, _ = _enable(user)
    code = _code(secret, totp.current_step() + 1)
    assert sorted(_race(lambda: flows.proof_verify(user=user, ceremony=STEP, code=code))) == [False, False, False, True]


@pytest.mark.django_db(transaction=True)
def test_of_concurrent_requests_with_one_recovery_code_exactly_one_wins():
    user = UserFactory()
    _, codes = _enable(user)
    assert sorted(_race(lambda: flows.proof_verify(user=user, ceremony=STEP, code=codes[3]))) == [
        False,
        False,
        False,
        True,
    ]
    assert SecurityEvent.objects.filter(user=user, kind="recovery_code_used").count() == 1


@pytest.mark.django_db(transaction=True)
def test_of_concurrent_second_steps_with_one_mfa_token_exactly_one_logs_in():
    user = UserFactory()
    _, codes = _enable(user)
    token = flows.login_token_issue(user=user)
    proofs = iter(codes[:4])  # each thread a different right code: only the token decides
    lock = threading.Lock()

    def attempt() -> bool:
        with lock:
            code = next(proofs)
        try:
            flows.login_token_redeem(token=token, code=code)
        except InvalidToken:
            return False
        return True

    assert sorted(_race(attempt)) == [False, False, False, True]


@pytest.mark.django_db
def test_the_login_token_is_single_use_expires_and_dies_after_five_wrong_proofs():
    user = UserFactory()
    _, codes = _enable(user)
    token = flows.login_token_issue(user=user)
    assert token not in str(MfaLoginToken.objects.get(user=user).token_hash)
    assert flows.login_token_redeem(token=token, code=codes[0]) == user
    with pytest.raises(InvalidToken):
        flows.login_token_redeem(token=token, code=codes[1])

    expired = flows.login_token_issue(user=user)
    MfaLoginToken.objects.filter(used_at__isnull=True).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(InvalidToken):
        flows.login_token_user(token=expired)

    dying = flows.login_token_issue(user=user)
    for _ in range(flows.LOGIN_TOKEN_MAX_FAILURES):
        with pytest.raises(WrongProof):
            flows.login_token_redeem(token=dying, code="222222")
    with pytest.raises(InvalidToken):
        flows.login_token_redeem(token=dying, code=codes[1])
    assert flows.proof_verify(user=user, ceremony=STEP, code=codes[1])  # the code was not spent on a dead token


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        (("staff", "banker"), {"depositor": False, "banker": True, "staff": True, "superuser": True}),
        (("all",), {"depositor": True, "banker": True, "staff": True, "superuser": True}),
        (("none",), {"depositor": False, "banker": False, "staff": False, "superuser": False}),
        (("depositor",), {"depositor": True, "banker": False, "staff": False, "superuser": False}),
    ],
)
def test_who_must_have_a_second_factor(settings, roles, expected):
    settings.MFA_REQUIRED_ROLES = roles
    users = {
        "depositor": UserFactory(),
        "banker": UserFactory(role=User.Role.BANKER),
        "staff": UserFactory(is_staff=True),
        "superuser": UserFactory(is_staff=True, is_superuser=True),
    }
    assert {name: policies.must_have_second_factor(user) for name, user in users.items()} == expected


@pytest.mark.django_db
def test_a_secret_no_key_of_the_chain_reads_is_a_refused_proof_not_a_500(settings, caplog, no_throttling):
    """A key dropped from the chain too early: the right code is refused like a wrong one (the
    user's recovery codes and passkeys still work; staff reset the app), logged with the user id."""
    from rest_framework.test import APIClient

    user = UserFactory(username="ada", is_email_verified=True)
    secret = pyotp.TOTP(with_totp(user))
    settings.MFA_ENCRYPTION_KEY, settings.MFA_ENCRYPTION_KEY_FALLBACKS = "a new key " * 5, []
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "another secret key " * 3, []
    api = APIClient()
    first = api.post("/api/tokens/", {"username": "ada", "password": "correct horse battery staple"}, format="json")
    assert first.status_code == 401 and first.json()["code"] == "mfa_required"
    with time_machine.travel(time.time(), tick=False):
        answer = api.post(
            "/api/tokens/mfa/", {"mfa_token": first.json()["mfa_token"], "code": secret.now()}, format="json"
        )
    wrong = api.post("/api/tokens/mfa/", {"mfa_token": first.json()["mfa_token"], "code": "000000"}, format="json")
    assert answer.status_code == wrong.status_code == 401 and answer.json() == wrong.json()
    assert any(r.levelname == "ERROR" and getattr(r, "user_id", None) == user.pk for r in caplog.records)


@pytest.mark.django_db
def test_a_user_has_at_most_ten_log_ins_half_done_the_oldest_going_first():
    """Whoever has the password gets an mfa_token per request, unthrottled (only failures count):
    the rows stay bounded, and the newest token still works."""
    user = UserFactory()
    secret = pyotp.TOTP(with_totp(user))
    tokens = [flows.login_token_issue(user=user) for _ in range(flows.LOGIN_TOKENS_LIVE + 3)]
    assert MfaLoginToken.objects.filter(user=user).count() == flows.LOGIN_TOKENS_LIVE
    with pytest.raises(InvalidToken):
        flows.login_token_user(token=tokens[0])
    with time_machine.travel(time.time(), tick=False):
        assert flows.login_token_redeem(token=tokens[-1], code=secret.now()) == user

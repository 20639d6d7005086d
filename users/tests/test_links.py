"""Verification links: single use, one answer for every bad link, the address they prove."""

from datetime import timedelta

import pytest
from django.utils import timezone

from conftest import tampered
from users import tokens
from users.errors import InvalidLink
from users.models import EmailVerification, User
from users.services import links
from users.tests.factories import create_verification

pytestmark = pytest.mark.django_db

State = EmailVerification.State


def test_verify_consumes_the_code_once():
    verification = create_verification()
    code = tokens.make_code(verification.pk, verification.nonce)
    user = links.email_verify(verification_id=verification.pk, code=code)
    assert user.is_email_verified
    verification.refresh_from_db()
    assert verification.state == State.VERIFIED and verification.verified_at
    with pytest.raises(InvalidLink):
        links.email_verify(verification_id=verification.pk, code=code)


def test_wrong_expired_superseded_and_foreign_codes_are_refused():
    verification = create_verification()
    other = create_verification()
    good = tokens.make_code(verification.pk, verification.nonce)
    for vid, code in [
        (verification.pk, tampered(good)),
        (verification.pk, tokens.make_code(other.pk, other.nonce)),  # another user's code
        (other.pk, good),
        (verification.pk, ""),
        (verification.pk, "x" * 10_000),
        (10**12, good),  # unknown id
    ]:
        with pytest.raises(InvalidLink):
            links.email_verify(verification_id=vid, code=code)
    EmailVerification.objects.filter(pk=verification.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(InvalidLink):
        links.email_verify(verification_id=verification.pk, code=good)
    fresh = create_verification(other.user)  # supersedes `other`
    with pytest.raises(InvalidLink):
        links.email_verify(verification_id=other.pk, code=tokens.make_code(other.pk, other.nonce))
    assert links.email_verify(verification_id=fresh.pk, code=tokens.make_code(fresh.pk, fresh.nonce))
    assert not User.objects.get(pk=verification.user_id).is_email_verified


def test_codes_survive_secret_key_rotation(settings):
    verification = create_verification()
    code = tokens.make_code(verification.pk, verification.nonce)
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a-brand-new-secret-key-" + "x" * 40, [settings.SECRET_KEY]
    assert links.email_verify(verification_id=verification.pk, code=code).is_email_verified


def test_verifying_after_the_address_changed_is_refused():
    verification = create_verification()
    code = tokens.make_code(verification.pk, verification.nonce)
    User.objects.filter(pk=verification.user_id).update(email="someone-else@example.com")
    with pytest.raises(InvalidLink):
        links.email_verify(verification_id=verification.pk, code=code)
    assert not User.objects.get(pk=verification.user_id).is_email_verified

"""Passkeys over HTTP against the running stack (Django on a real port, PostgreSQL, Redis, the
worker, an SMTP sink), with a software authenticator in place of the phone: what a client does and
what the user notices — the answers, the notice, whether a session works, the lockout."""

from __future__ import annotations

import pyotp
import pytest
from django.contrib.auth.tokens import default_token_generator
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from webauthn.helpers import bytes_to_base64url

from conftest import message_text, wait_for
from tests.security.test_account_takeover import NEW_PASSWORD, PASSWORD, Api, Browser, _behind_a_proxy
from users.models import LoginSession, SecurityEvent, User, WebAuthnChallenge
from users.tests.authenticator import SoftAuthenticator
from users.tests.factories import UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PASSKEY_LOGIN_REFUSED = "That passkey is not known here, or its answer is wrong, was used already or took too long."
SECOND_STEP_REFUSED = "That code is wrong or was used already, or the log-in took too long: log in again."


def add_passkey(api: Api, origin: str, name: str = "phone", **proof) -> tuple[SoftAuthenticator, dict]:
    """Register a passkey through the API, as a browser with its authenticator would."""
    begun = api.call("POST", "/api/mfa/passkeys/begin/", {"current_password": PASSWORD, **proof})
    assert begun.status_code == 200, begun.text
    device = SoftAuthenticator(origin=origin)
    added = api.call("POST", "/api/mfa/passkeys/", {"name": name, "credential": device.create(begun.json()["options"])})
    assert added.status_code == 201, added.text
    return device, added.json()


def password_step(stack: str, *, ip: str | None = None) -> tuple[Api, dict]:
    api = Api(stack, ip=ip)
    answer = api.call("POST", "/api/tokens/", {"username": "ada", "password": PASSWORD})
    assert answer.status_code == 401 and answer.json()["code"] == "mfa_required", answer.text
    return api, answer.json()


def passkey_step(api: Api, first: dict, credential: dict):
    answer = api.call("POST", "/api/tokens/mfa/", {"mfa_token": first["mfa_token"], "credential": credential})
    if answer.status_code == 200:
        api.http.headers["Authorization"] = f"Bearer {answer.json()['access']}"
    return answer


def discoverable_log_in(client: Api, device: SoftAuthenticator):
    """A log-in with a passkey alone: the options, the authenticator's answer."""
    begun = client.call("POST", "/api/tokens/passkey/begin/", {})
    assert begun.status_code == 200, begun.text
    body = {"passkey_token": begun.json()["passkey_token"], "credential": device.get(begun.json()["options"])}
    return client.call("POST", "/api/tokens/passkey/", body)


def step_up(api: Api, device: SoftAuthenticator) -> dict:
    """A fresh assertion for one sensitive request."""
    challenge = api.call("POST", "/api/mfa/challenge/", {})
    assert challenge.status_code == 200, challenge.text
    return device.get(challenge.json()["passkey_options"])


def test_register_a_passkey_then_log_in_with_password_and_passkey(stack, ada, smtp_server):
    api = Api(stack)
    assert api.log_in("ada").status_code == 200
    device, added = add_passkey(api, stack)
    assert added["name"] == "phone" and len(added["recovery_codes"]) == 10 and added["last_used_at"] is None
    [notice] = wait_for(lambda: [m for m in smtp_server.to("ada@example.com") if "passkey" in m["Subject"].lower()])
    assert "passkey" in message_text(notice).lower()
    listed = api.call("GET", "/api/mfa/").json()
    assert listed["totp"] is False and listed["recovery_codes_left"] == 10
    assert [(k["id"], k["name"]) for k in listed["passkeys"]] == [(added["id"], "phone")]

    client, first = password_step(stack)
    assert first["methods"] == ["passkey", "recovery_code"]
    assert first["passkey_options"]["rpId"] == "localhost"
    assert [c["id"] for c in first["passkey_options"]["allowCredentials"]] == [bytes_to_base64url(device.credential_id)]
    assert client.call("GET", "/api/users/me/").status_code == 401  # the password alone: no session
    done = passkey_step(client, first, device.get(first["passkey_options"]))
    assert done.status_code == 200, done.text
    assert client.call("GET", "/api/users/me/").json()["username"] == "ada"
    assert api.call("GET", "/api/mfa/").json()["passkeys"][0]["last_used_at"] is not None


@pytest.mark.parametrize(
    "name",
    [
        "Visit https://evil.example/verify now",
        "phone\r\nBcc: x@example.com",
        "evil.example",
        "   ",
        "Help: simplebank-help\ufe0f.com/login",
    ],
)
def test_a_passkey_name_that_would_carry_a_link_or_a_line_into_the_notice_is_refused(stack, ada, smtp_server, name):
    """The name is printed in the notice mailed when a passkey is added, which carries no link but
    to the site (a review put a link and a forged header line in it)."""
    api = Api(stack)
    assert api.log_in("ada").status_code == 200
    begun = api.call("POST", "/api/mfa/passkeys/begin/", {"current_password": PASSWORD})
    device = SoftAuthenticator(origin=stack)
    added = api.call("POST", "/api/mfa/passkeys/", {"name": name, "credential": device.create(begun.json()["options"])})
    assert added.status_code == 400 and set(added.json()) == {"name"}, added.text
    assert api.call("GET", "/api/mfa/").json()["passkeys"] == []
    # A name with extra spaces is kept as it prints.
    _, kept = add_passkey(api, stack, name="  my   phone ")
    assert kept["name"] == "my phone"


def test_a_replayed_assertion_is_refused_with_the_one_answer(stack, ada):
    api = Api(stack)
    api.log_in("ada")
    device, _ = add_passkey(api, stack)
    client, first = password_step(stack)
    assertion = device.get(first["passkey_options"])
    assert passkey_step(client, first, assertion).status_code == 200
    _, again = password_step(stack)
    replayed = passkey_step(Api(stack), again, assertion)
    wrong_code = Api(stack).call("POST", "/api/tokens/mfa/", {"mfa_token": again["mfa_token"], "code": "000000"})
    assert replayed.status_code == wrong_code.status_code == 401
    assert replayed.json() == wrong_code.json() and replayed.json()["detail"] == SECOND_STEP_REFUSED


def test_a_discoverable_passkey_logs_in_in_one_step(stack, ada):
    api = Api(stack)
    api.log_in("ada")
    device, _ = add_passkey(api, stack)
    sessions_before = LoginSession.objects.filter(user=ada).count()

    client = Api(stack)
    begun = client.call("POST", "/api/tokens/passkey/begin/", {})
    assert begun.status_code == 200, begun.text
    options, token = begun.json()["options"], begun.json()["passkey_token"]
    assert options["allowCredentials"] == [] and options["userVerification"] == "required"
    answer = client.call("POST", "/api/tokens/passkey/", {"passkey_token": token, "credential": device.get(options)})
    assert answer.status_code == 200, answer.text
    assert answer.json()["user"]["username"] == "ada"
    client.http.headers["Authorization"] = f"Bearer {answer.json()['access']}"
    assert client.call("GET", "/api/users/me/").status_code == 200
    assert LoginSession.objects.filter(user=ada).count() == sessions_before + 1

    # The token is spent; a passkey without user verification is not both factors.
    again = client.call("POST", "/api/tokens/passkey/", {"passkey_token": token, "credential": device.get(options)})
    assert again.status_code == 401 and again.json()["detail"] == PASSKEY_LOGIN_REFUSED
    device.user_verification = False
    begun = client.call("POST", "/api/tokens/passkey/begin/", {}).json()
    unverified = client.call(
        "POST",
        "/api/tokens/passkey/",
        {"passkey_token": begun["passkey_token"], "credential": device.get(begun["options"])},
    )
    assert unverified.status_code == 401 and unverified.json() == again.json()
    garbage = client.call("POST", "/api/tokens/passkey/", {"passkey_token": "x", "credential": {"id": 1}})
    assert garbage.status_code == 401 and garbage.json() == again.json()


def test_an_address_change_steps_up_with_a_passkey(stack, ada):
    api = Api(stack)
    api.log_in("ada")
    device, _ = add_passkey(api, stack)
    body = {"email": "new@example.com", "current_password": PASSWORD}
    missing = api.call("PATCH", "/api/users/me/", body)
    assert missing.status_code == 400 and set(missing.json()) == {"code"}
    stranger = SoftAuthenticator(origin=stack)
    stranger.credential_id = device.credential_id
    wrong = api.call("PATCH", "/api/users/me/", body | {"credential": step_up(api, stranger)})
    assert wrong.status_code == 400 and set(wrong.json()) == {"credential"}
    assert User.objects.get(pk=ada.pk).pending_email == ""
    changed = api.call("PATCH", "/api/users/me/", body | {"credential": step_up(api, device)})
    assert changed.status_code == 200 and changed.json()["pending_email"] == "new@example.com"
    assert SecurityEvent.objects.filter(user=ada, kind="login_failed").count() == 1


def test_an_answer_to_one_ceremonys_options_is_refused_by_another(stack, ada):
    """A review signed a log-in's passkey options and sent the answer as a step-up's proof (200: the
    address changed), and a step-up's or a reset's options to finish a log-in (200: tokens)."""
    api = Api(stack)
    api.log_in("ada")
    device, _ = add_passkey(api, stack)
    body = {"email": "new@example.com", "current_password": PASSWORD}
    _, first = password_step(stack)
    as_step_up = api.call("PATCH", "/api/users/me/", body | {"credential": device.get(first["passkey_options"])})
    assert as_step_up.status_code == 400 and set(as_step_up.json()) == {"credential"}
    assert User.objects.get(pk=ada.pk).pending_email == ""
    uid = urlsafe_base64_encode(force_bytes(ada.pk))
    token = default_token_generator.make_token(User.objects.get(pk=ada.pk))
    reset = Api(stack).call("POST", "/api/password-reset/challenge/", {"uid": uid, "token": token})
    for credential in (step_up(api, device), device.get(reset.json()["passkey_options"])):
        client, first = password_step(stack)
        refused = passkey_step(client, first, credential)
        assert refused.status_code == 401 and refused.json()["detail"] == SECOND_STEP_REFUSED
    link = {"uid": uid, "token": token, "new_password": NEW_PASSWORD, "credential": step_up(api, device)}
    assert Api(stack).call("POST", "/api/password-reset/confirm/", link).status_code == 400
    # Each answered in its own ceremony still works.
    client, first = password_step(stack)
    assert passkey_step(client, first, device.get(first["passkey_options"])).status_code == 200
    assert api.call("PATCH", "/api/users/me/", body | {"credential": step_up(api, device)}).status_code == 200


def test_delete_a_passkey_with_a_proof_and_not_anyone_elses(stack, ada):
    api = Api(stack)
    api.log_in("ada")
    device, added = add_passkey(api, stack)
    second, other = add_passkey(api, stack, name="key", credential=step_up(api, device))
    assert "recovery_codes" not in other  # not the first factor

    UserFactory(username="eve", email="eve@example.com", is_email_verified=True)
    eve = Api(stack)
    eve.log_in("eve")
    stranger = eve.call("DELETE", f"/api/mfa/passkeys/{added['id']}/", {"current_password": PASSWORD})
    assert stranger.status_code == 404

    no_proof = api.call("DELETE", f"/api/mfa/passkeys/{added['id']}/", {"current_password": PASSWORD})
    assert no_proof.status_code == 400
    gone = api.call(
        "DELETE",
        f"/api/mfa/passkeys/{added['id']}/",
        {"current_password": PASSWORD, "credential": step_up(api, second)},
    )
    assert gone.status_code == 204
    assert [k["name"] for k in api.call("GET", "/api/mfa/").json()["passkeys"]] == ["key"]
    assert SecurityEvent.objects.filter(user=ada, kind="passkey_removed").exists()
    # The removed passkey no longer logs in.
    begun = Api(stack).call("POST", "/api/tokens/passkey/begin/", {}).json()
    refused = Api(stack).call(
        "POST",
        "/api/tokens/passkey/",
        {"passkey_token": begun["passkey_token"], "credential": device.get(begun["options"])},
    )
    assert refused.status_code == 401


def test_wrong_assertions_count_toward_the_lockout(stack, ada, settings):
    api = Api(stack)
    api.log_in("ada")
    device, _ = add_passkey(api, stack)
    _behind_a_proxy(settings)
    attacker_ip = "203.0.113.7"
    impostor = SoftAuthenticator(origin=stack)
    impostor.credential_id = device.credential_id  # names Ada's passkey, signs with another key
    answers = []
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client = Api(stack, ip=attacker_ip)
        begun = client.call("POST", "/api/tokens/passkey/begin/", {}).json()
        answers.append(
            client.call(
                "POST",
                "/api/tokens/passkey/",
                {"passkey_token": begun["passkey_token"], "credential": impostor.get(begun["options"])},
            ).status_code
        )
    assert answers == [401] * (settings.AXES_FAILURE_LIMIT - 1) + [429]
    locked = Api(stack, ip=attacker_ip).call("POST", "/api/tokens/", {"username": "ada", "password": PASSWORD})
    assert locked.status_code == 429
    # Ada, from an address that has not failed, logs in with her passkey.
    client = Api(stack, ip="198.51.100.9")
    begun = client.call("POST", "/api/tokens/passkey/begin/", {}).json()
    mine = client.call(
        "POST",
        "/api/tokens/passkey/",
        {"passkey_token": begun["passkey_token"], "credential": device.get(begun["options"])},
    )
    assert mine.status_code == 200, mine.text


def test_passkeys_work_with_an_ip_address_as_relying_party(
    live_server, smtp_server, worker, settings, no_throttling, ada
):
    port = live_server.url.rsplit(":", 1)[1]
    stack = f"http://127.0.0.1:{port}"
    settings.SITE_URL = stack
    api = Api(stack)
    api.log_in("ada")
    device, _ = add_passkey(api, stack)
    client, first = password_step(stack)
    assert first["passkey_options"]["rpId"] == "127.0.0.1"
    assert passkey_step(client, first, device.get(first["passkey_options"])).status_code == 200
    # The same authenticator answering for another origin is refused.
    _, first = password_step(stack)
    assert (
        passkey_step(
            Api(stack), first, device.get(first["passkey_options"], origin=f"http://localhost:{port}")
        ).status_code
        == 401
    )


def test_a_password_reset_of_a_passkey_user_needs_its_assertion(stack, ada):
    api = Api(stack)
    api.log_in("ada")
    device, _ = add_passkey(api, stack)
    uid = urlsafe_base64_encode(force_bytes(ada.pk))
    token = default_token_generator.make_token(User.objects.get(pk=ada.pk))
    link = {"uid": uid, "token": token, "new_password": NEW_PASSWORD}
    missing = Api(stack).call("POST", "/api/password-reset/confirm/", link)
    assert missing.status_code == 400 and set(missing.json()) == {"code"}
    challenge = Api(stack).call("POST", "/api/password-reset/challenge/", {"uid": uid, "token": token})
    assert challenge.status_code == 200, challenge.text
    credential = device.get(challenge.json()["passkey_options"])
    done = Api(stack).call("POST", "/api/password-reset/confirm/", link | {"credential": credential})
    assert done.status_code == 204, done.text
    assert Api(stack).log_in("ada", NEW_PASSWORD).status_code == 401  # a factor is still owed
    bad = Api(stack).call("POST", "/api/password-reset/challenge/", {"uid": uid, "token": token})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_link"  # the link is spent


def test_unknown_passkeys_count_as_failed_log_ins_of_the_address(stack, ada, settings):
    _behind_a_proxy(settings, login_rate="3/min")
    stranger = SoftAuthenticator(origin=stack)  # a passkey this site never registered
    answers = [discoverable_log_in(Api(stack, ip="203.0.113.8"), stranger).status_code for _ in range(3)]
    assert answers == [401, 401, 401]
    held = Api(stack, ip="203.0.113.8").call("POST", "/api/tokens/passkey/begin/", {})
    assert held.status_code == 429 and "Retry-After" in held.headers
    assert Api(stack, ip="198.51.100.10").log_in("ada").status_code == 200  # another address is not held


def test_passkey_options_before_a_log_in_are_limited_per_address(stack, ada, settings):
    """Each answer stores a challenge for 5 minutes and nobody is logged in yet: asking is counted
    per client address, so an anonymous client cannot have rows written as fast as it likes."""
    api = Api(stack)
    api.log_in("ada")
    add_passkey(api, stack)
    _behind_a_proxy(settings)
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] | {"passkey_options": "3/min"}
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {"DEFAULT_THROTTLE_RATES": rates}
    stored = WebAuthnChallenge.objects.count()

    asker = Api(stack, ip="203.0.113.30")
    answers = [asker.call("POST", "/api/tokens/passkey/begin/", {}) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert int(answers[-1].headers["Retry-After"]) >= 1
    assert WebAuthnChallenge.objects.count() == stored + 3  # the refused one stored nothing
    assert Api(stack, ip="198.51.100.30").call("POST", "/api/tokens/passkey/begin/", {}).status_code == 200

    # The page's second step: the options for the pending log-in's passkey, counted the same way.
    browser = Browser(stack)
    browser.http.headers["X-Forwarded-For"] = "203.0.113.31"
    assert browser.log_in("ada").headers["Location"] == "/login/verify/"
    asked = [browser.post_form("/login/verify/challenge/", {}, form_page="/login/verify/") for _ in range(4)]
    assert [a.status_code for a in asked] == [200, 200, 200, 429], [a.text for a in asked]
    assert "rpId" in asked[0].json()["options"]


def test_adding_an_app_beside_a_passkey_tells_the_owner_their_old_recovery_codes_stopped_working(
    stack, ada, smtp_server
):
    """Confirming TOTP hands out ten new codes; the ones printed with the passkey stop working — the
    owner is told (a hostile review found them replaced silently, the notice naming the app only)."""
    api = Api(stack)
    api.log_in("ada")
    device, added = add_passkey(api, stack)
    old_codes = added["recovery_codes"]
    setup = api.call("POST", "/api/mfa/totp/setup/", {"current_password": PASSWORD, "credential": step_up(api, device)})
    assert setup.status_code == 200, setup.text
    confirmed = api.call("POST", "/api/mfa/totp/confirm/", {"code": pyotp.TOTP(setup.json()["secret"]).now()})
    assert confirmed.status_code == 200, confirmed.text
    new_codes = confirmed.json()["recovery_codes"]
    assert len(new_codes) == 10 and not set(new_codes) & set(old_codes)

    kinds = list(SecurityEvent.objects.filter(user=ada).values_list("kind", flat=True))
    assert "recovery_codes_regenerated" in kinds and "mfa_enabled" in kinds
    wait_for(
        lambda: [m for m in smtp_server.to("ada@example.com") if "recovery codes" in m["Subject"].lower()],
        what="the notice that the old recovery codes no longer work",
    )
    client, first = password_step(stack)
    old = client.call("POST", "/api/tokens/mfa/", {"mfa_token": first["mfa_token"], "code": old_codes[0]})
    assert old.status_code == 401
    client, first = password_step(stack)
    assert client.call("POST", "/api/tokens/mfa/", {"mfa_token": first["mfa_token"], "code": new_codes[0]}).ok


class _OffCurve(SoftAuthenticator):
    def _cose_key(self) -> bytes:
        import cbor2

        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: (1).to_bytes(32, "big"), -3: (1).to_bytes(32, "big")})


@pytest.mark.parametrize("device_kind", ["long id", "near the index limit", "off its curve", "a huge key"])
def test_a_passkey_that_could_never_sign_or_be_indexed_is_refused_not_kept(stack, ada, device_kind):
    """py_webauthn keeps what an attestation carries: an id past WebAuthn's 1023 bytes was kept (past
    ~2.7 kB it was a 500), and a "key" off its curve or a megabyte long was kept as a second factor
    that could never sign (a review)."""
    api = Api(stack)
    assert api.log_in("ada").status_code == 200
    begun = api.call("POST", "/api/mfa/passkeys/begin/", {"current_password": PASSWORD})
    device = _OffCurve(origin=stack) if device_kind == "off its curve" else SoftAuthenticator(origin=stack)
    if device_kind == "long id":
        device.credential_id = bytes(1024)
    if device_kind == "near the index limit":
        device.credential_id = bytes(3000)
    if device_kind == "a huge key":
        real = device._cose_key()
        device._cose_key = lambda: _huge(real)  # type: ignore[method-assign]
    added = api.call(
        "POST", "/api/mfa/passkeys/", {"name": "odd", "credential": device.create(begun.json()["options"])}
    )
    assert added.status_code == 400, added.text
    assert api.call("GET", "/api/mfa/").json()["passkeys"] == []


def _huge(cose_key: bytes) -> bytes:
    """The same ES256 key with a 5 kB field no key needs (COSE allows extra labels)."""
    import cbor2

    fields = cbor2.loads(cose_key)
    return cbor2.dumps(fields | {-70000: bytes(5000)})


def test_a_log_in_whose_passkey_is_removed_meanwhile_gets_no_session(stack, ada, monkeypatch):
    """The assertion was checked while the passkey existed; its removal (which ends the other
    sessions) committed before the session was made: the session outlived the passkey (a review)."""
    from users.account_apis import tokens as token_views
    from users.mfa import flows

    api = Api(stack)
    assert api.log_in("ada").status_code == 200
    device, added = add_passkey(api, stack)
    first_api, first = password_step(stack)
    real = token_views.mfa.login_token_redeem

    def redeem_while_the_owner_removes_it(**kwargs):
        user = real(**kwargs)
        flows.passkey_remove(user=User.objects.get(pk=ada.pk), passkey_id=added["id"])
        return user

    monkeypatch.setattr(token_views.mfa, "login_token_redeem", redeem_while_the_owner_removes_it)
    answer = passkey_step(first_api, first, device.get(first["passkey_options"]))
    assert answer.status_code == 401, answer.text
    assert not LoginSession.objects.filter(user=ada).live().exists()  # the removal ended the others too


def test_a_user_handle_that_is_not_the_passkeys_owners_is_refused(stack, ada, settings):
    """WebAuthn's step 6: the handle an authenticator gives names the credential's owner; any was
    taken, the credential id alone deciding (a review). A handle given before a key rotation still
    counts (a fallback key)."""
    api = Api(stack)
    assert api.log_in("ada").status_code == 200
    device, _ = add_passkey(api, stack)
    own = device.user_handle
    device.user_handle = bytes(32)
    assert discoverable_log_in(Api(stack), device).status_code == 401
    device.user_handle = own
    assert discoverable_log_in(Api(stack), device).status_code == 200

    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-key-after-a-rotation-0123456789-abcdefghijklmnop"
    assert discoverable_log_in(Api(stack), device).status_code == 200


def test_a_user_has_at_most_twenty_passkeys_and_is_told_before_any_proof_is_spent(stack, ada):
    """Each passkey is a way in and rides in every log-in's options: no cap let one account keep
    any number (a review)."""
    from users.models import Passkey

    api = Api(stack)
    assert api.log_in("ada").status_code == 200
    device, _ = add_passkey(api, stack)
    for n in range(19):
        Passkey.objects.create(user=ada, name=f"key {n}", credential_id=bytes([n]) * 16, public_key=b"k")
    proof = {"current_password": PASSWORD, "credential": step_up(api, device)}
    refused = api.call("POST", "/api/mfa/passkeys/begin/", proof)
    assert refused.status_code == 400 and refused.json()["code"] == "mfa_state", refused.text
    assert "20 passkeys" in refused.json()["detail"]
    assert Passkey.objects.filter(user=ada).count() == 20
    # The proof was not spent: the same assertion still serves another change.
    assert api.call("PATCH", "/api/users/me/", {"email": "ada@new.example.org", **proof}).status_code == 200

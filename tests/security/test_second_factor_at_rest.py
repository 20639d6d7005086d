"""Second-factor secrets at rest: what someone holding a copy of the database, or an operator
browsing the admin, could read. The factors are set up through the API as a user would (so the test
knows the plaintexts the user was shown), the rows are committed, then a real ``pg_dump`` is read
as an auditor would read it — including the session rows, which are signed, not encrypted — and
every admin page is opened as a superuser. Neither may hold a TOTP secret (on or pending), a
recovery code (in any of the forms it is typed in) or a log-in's mfa token."""

from __future__ import annotations

import base64
import binascii
import os
import re
import shutil
import subprocess
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import cast

import pyotp
import pytest
from django.contrib import admin
from django.db import connection
from django.test import Client
from django.urls import reverse

from tests.security.test_account_takeover import PASSWORD
from users.account_views import SECOND_STEP_KEY
from users.mfa import flows as mfa
from users.mfa import recovery_codes
from users.models import MfaLoginToken, Passkey, RecoveryCode, TotpDevice, User
from users.tests.authenticator import SoftAuthenticator
from users.tests.factories import UserFactory, superuser_with_factor

pytestmark = pytest.mark.django_db(transaction=True)  # committed rows: pg_dump reads another session

SITE = "http://localhost:8000"  # the passkeys' relying party (the software authenticator's origin)
NO_PG_DUMP = "pg_dump is not on PATH: install postgresql-client to run the database-dump tests"


@dataclass
class Planted:
    """Users with second factors, and the plaintexts they were shown (what must stay out of reach)."""

    ada: User  # TOTP on: the secret, ten recovery codes, an mfa token of an API log-in
    bob: User  # a TOTP set-up never confirmed: a pending secret
    cy: User  # a passkey as the first factor: ten recovery codes of her own
    totp_secret: str
    pending_secret: str
    codes: list[str]  # ada's and cy's, as shown ("XXXX-XXXX-XXXX")
    mfa_token: str


@pytest.fixture(autouse=True)
def _site(settings, no_throttling, redis_broker) -> None:
    """The passkeys' origin; no rate limits; the notices the set-ups queue are flushed after."""
    settings.SITE_URL = SITE


def _json(client: Client, path: str, body: dict, token: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = client.post(path, body, content_type="application/json", headers=headers)
    return answer.status_code, answer.json()


def _api_log_in(user: User) -> str:
    status, body = _json(Client(), "/api/tokens/", {"username": user.username, "password": PASSWORD})
    assert status == 200, body
    return body["access"]


def _totp_set_up(user: User) -> tuple[str, str]:
    """The set-up's answer (secret) and the bearer token of the session that asked for it."""
    access = _api_log_in(user)
    status, body = _json(Client(), "/api/mfa/totp/setup/", {"current_password": PASSWORD}, access)
    assert status == 200, body
    return body["secret"], access


@pytest.fixture
def planted() -> Planted:
    ada, bob, cy = (
        cast("User", UserFactory(username=name, email=f"{name}@example.com", is_email_verified=True))
        for name in ("ada", "bob", "cy")
    )
    secret, access = _totp_set_up(ada)
    status, confirmed = _json(Client(), "/api/mfa/totp/confirm/", {"code": pyotp.TOTP(secret).now()}, access)
    assert status == 200, confirmed
    pending, _ = _totp_set_up(bob)

    access = _api_log_in(cy)
    status, begun = _json(Client(), "/api/mfa/passkeys/begin/", {"current_password": PASSWORD}, access)
    assert status == 200, begun
    credential = SoftAuthenticator(origin=SITE).create(begun["options"])
    status, added = _json(Client(), "/api/mfa/passkeys/", {"name": "phone", "credential": credential}, access)
    assert status == 201, added

    status, first_step = _json(Client(), "/api/tokens/", {"username": "ada", "password": PASSWORD})
    assert status == 401 and first_step["code"] == "mfa_required", first_step
    codes = confirmed["recovery_codes"] + added["recovery_codes"]
    assert len(codes) == 20 and all(recovery_codes.looks_like(code) for code in codes)
    return Planted(ada, bob, cy, secret, pending, codes, first_step["mfa_token"])


# --- The forms a secret could be stored or shown in ----------------------------------------------------
def _totp_secret_forms(secret: str) -> set[str]:
    """The base32 text in either case, and as ``bytea`` shows in a dump (``\\x`` + hex): the text's
    bytes, or the raw key the base32 decodes to."""
    return {secret, secret.lower(), secret.encode().hex(), base64.b32decode(secret).hex()}


def _recovery_code_forms(code: str) -> set[str]:
    """As shown (with dashes) and as normalized for checking (without), in either case."""
    bare = recovery_codes.normalize(code)
    assert bare != code  # the two forms differ: both are looked for
    return {code, code.lower(), bare, bare.lower(), bare.encode().hex()}


def _forbidden(planted: Planted) -> dict[str, str]:
    """Each form of each secret, with what it is (for the failure message)."""
    found: dict[str, str] = {}
    for form in _totp_secret_forms(planted.totp_secret):
        found[form] = "ada's TOTP secret"
    for form in _totp_secret_forms(planted.pending_secret):
        found[form] = "bob's pending TOTP secret"
    for code in planted.codes:
        for form in _recovery_code_forms(code):
            found[form] = f"recovery code {code}"
    found[planted.mfa_token] = "ada's mfa token"
    found[planted.mfa_token.encode().hex()] = "ada's mfa token (as bytea)"
    return found


def _leaks(text: str, forbidden: dict[str, str]) -> list[str]:
    return sorted({what for form, what in forbidden.items() if form in text})


# --- A real dump ----------------------------------------------------------------------------------------
def _pg_dump() -> str:
    """``pg_dump --data-only`` of the test database, as an operator would take a backup."""
    binary = shutil.which("pg_dump")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(NO_PG_DUMP)
        pytest.skip(NO_PG_DUMP)
    db = connection.settings_dict
    env = os.environ | ({"PGPASSWORD": db["PASSWORD"]} if db["PASSWORD"] else {})
    command = [
        binary,
        "--data-only",
        "--no-password",
        f"--dbname={db['NAME']}",
        f"--host={db['HOST'] or '127.0.0.1'}",
        f"--port={db['PORT'] or 5432}",
        f"--username={db['USER']}",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _copy_rows(dump: str, table: str) -> list[list[str]]:
    """The rows of ``table``'s ``COPY ... FROM stdin`` block, split into columns."""
    match = re.search(rf"^COPY public\.{table} \(.*?\) FROM stdin;\n(.*?)^\\\.$", dump, re.MULTILINE | re.DOTALL)
    assert match, f"no COPY block for {table} in the dump"
    return [line.split("\t") for line in match.group(1).splitlines()]


def _readable(session_data: str) -> str:
    """A Django session row's data as anyone holding the dump reads it, without the SECRET_KEY: the
    value is signed, not encrypted (urlsafe base64 of JSON, zlib-compressed when the first
    character is a dot)."""
    payload = session_data.split(":", 1)[0]
    raw = base64.urlsafe_b64decode(payload.lstrip(".") + "=" * (-len(payload.lstrip(".")) % 4))
    return (zlib.decompress(raw) if payload.startswith(".") else raw).decode()


def _dump_as_read(dump: str) -> str:
    """The dump, plus the decoded data of every session row in it."""
    sessions = []
    for row in _copy_rows(dump, "django_session"):
        try:
            sessions.append(_readable(row[1]))
        except (binascii.Error, zlib.error, UnicodeDecodeError):
            sessions.append(row[1])
    return "\n".join([dump, *sessions])


def test_a_database_dump_holds_no_second_factor_secret(planted):
    """A backup that leaks (a copied dump, a restored test database) must not give anyone a way
    past the second factor: the rows are there, the secrets are not."""
    dump = _pg_dump()
    # A real dump of these users: their names, and the rows that hold their factors.
    assert all(f"\t{user.username}\t" in dump for user in (planted.ada, planted.bob, planted.cy))
    assert len(_copy_rows(dump, TotpDevice._meta.db_table)) == 2  # ada's (on) and bob's (pending)
    assert len(_copy_rows(dump, RecoveryCode._meta.db_table)) == 20
    assert len(_copy_rows(dump, MfaLoginToken._meta.db_table)) == 1
    assert len(_copy_rows(dump, Passkey._meta.db_table)) == 1

    assert _leaks(_dump_as_read(dump), _forbidden(planted)) == []


def test_a_dump_taken_during_a_page_log_in_holds_no_mfa_token(planted, monkeypatch):
    """Between the password and the code of a log-in on ``/login/``, the browser's session row
    exists in the database: a dump taken then must not give the log-in's mfa token away (the
    session keeps only its hash)."""
    issued: list[str] = []
    issue = mfa.login_token_issue
    monkeypatch.setattr(mfa, "login_token_issue", lambda **kw: issued.append(issue(**kw)) or issued[-1])
    browser = Client()
    answer = browser.post("/login/", {"username": "ada", "password": PASSWORD})
    assert answer.status_code == 302 and answer["Location"] == reverse("login-verify"), answer.status_code
    [token] = issued
    assert browser.session[SECOND_STEP_KEY]["token_hash"] == mfa.login_token_hash(token)
    assert MfaLoginToken.objects.filter(user=planted.ada, used_at__isnull=True).count() == 2  # the API's, this one

    dump = _dump_as_read(_pg_dump())
    assert "\tada\t" in dump
    assert _leaks(dump, {token: "the page log-in's mfa token", token.encode().hex(): "it as bytea"}) == []


# --- The admin ------------------------------------------------------------------------------------------
def _admin_pages(planted: Planted) -> Iterator[str]:
    """Every page of the admin an operator could open on these users' data: each registered model's
    list (so a second-factor model, once registered, is opened too) and the change page of each of
    its rows, the users' lists searched by name, and the users' history pages."""
    for model in admin.site._registry:
        opts = model._meta
        yield reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        for pk in model._default_manager.values_list("pk", flat=True):
            yield reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk])
    for user in (planted.ada, planted.bob, planted.cy):
        yield reverse("admin:users_user_changelist") + f"?q={user.username}"
        yield reverse("admin:users_user_history", args=[user.pk])


def _stored_forms() -> dict[str, str]:
    """What the database keeps instead of the secrets: not for the admin to show either."""
    found = {bytes(d.secret).decode(): "a TOTP secret, encrypted" for d in TotpDevice.objects.all()}
    found |= {h: "a recovery code's hash" for h in RecoveryCode.objects.values_list("code_hash", flat=True)}
    found |= {h: "an mfa token's hash" for h in MfaLoginToken.objects.values_list("token_hash", flat=True)}
    return found


def _second_factor_line(html: str) -> str:
    match = re.search(r'Second factor:</label>\s*<div class="readonly">([^<]*)</div>', html)
    assert match, "no second factor line on the user's page"
    return match.group(1)


def _opened(client: Client, paths: Iterable[str]) -> dict[str, str]:
    pages = {}
    for path in paths:
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.status_code)
        pages[path] = answer.content.decode()
    return pages


def test_the_admin_shows_whether_a_user_has_a_second_factor_never_what_it_is(planted, client):
    """An operator sees that a user has TOTP, passkeys, codes left — never a secret, a code or a
    token, nor what the database keeps instead (the encrypted secret, the hashes)."""
    root = superuser_with_factor(username="root")
    client.force_login(root)
    pages = _opened(client, _admin_pages(planted))

    forbidden = _forbidden(planted) | _stored_forms()
    assert {path: found for path, html in pages.items() if (found := _leaks(html, forbidden))} == {}
    # The pages opened are the users' own: each one's second-factor line says what they have.
    lines = {
        user.username: _second_factor_line(pages[reverse("admin:users_user_change", args=[user.pk])])
        for user in (planted.ada, planted.bob, planted.cy)
    }
    assert lines == {
        "ada": "TOTP on; 10 recovery code(s) left",
        "bob": "none",  # a set-up never confirmed is no factor
        "cy": "1 passkey(s); 10 recovery code(s) left",
    }

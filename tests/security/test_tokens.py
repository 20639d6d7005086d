"""Verification codes as an attacker would try them, and where the raw code may (not) be found."""

import subprocess
from datetime import timedelta

import dramatiq
import pytest
import time_machine
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from conftest import links_in, wait_for
from users.models import EmailVerification, OutboundEmail, User

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

VERIFY = "/api/verify-email/"


def _signed_up_with_link(signup_data, smtp_server) -> tuple[dict, int, str]:
    person = signup_data()
    assert APIClient().post("/api/users/", person, format="json").status_code == 201
    [message] = wait_for(lambda: smtp_server.to(person["email"]), what="the verification email")
    [(_, email_id, code)] = links_in(message)
    wait_for(lambda: OutboundEmail.objects.get(verification_id=email_id).state == "sent", what="row sent")
    return person, email_id, code


def _redis_dump(client) -> str:
    values = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            values.append(client.get(key))
        elif kind == b"hash":
            values.extend(client.hgetall(key).items())
        elif kind == b"list":
            values.extend(client.lrange(key, 0, -1))
        elif kind == b"set":
            values.extend(client.smembers(key))
        elif kind == b"zset":
            values.extend(client.zrange(key, 0, -1))
        values.append(key)
    return repr(values)


def test_raw_code_is_in_no_database_dump_redis_key_or_log(signup_data, smtp_server, worker, redis_broker, caplog):
    _, email_id, code = _signed_up_with_link(signup_data, smtp_server)
    db = connection.settings_dict
    dump = subprocess.run(
        ["pg_dump", "-h", db["HOST"] or "127.0.0.1", "-U", db["USER"], "--data-only", db["NAME"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert EmailVerification.objects.get(pk=email_id).nonce in dump  # the dump really holds the rows
    assert code not in dump
    redis_text = _redis_dump(redis_broker.client)
    assert code not in redis_text
    assert code not in caplog.text
    # Once verified the code is just as absent.
    assert APIClient().post(VERIFY, {"email_id": email_id, "secret_code": code}, format="json").status_code == 200
    assert code not in _redis_dump(redis_broker.client)


def test_every_bad_use_of_a_code_gets_the_same_400(signup_data, smtp_server, worker):
    person, email_id, code = _signed_up_with_link(signup_data, smtp_server)
    other, other_id, other_code = _signed_up_with_link(signup_data, smtp_server)
    api = APIClient()
    tampered = code[:-2] + ("AA" if code[-2:] != "AA" else "BB")
    attempts = {
        "tampered": {"email_id": email_id, "secret_code": tampered},
        "other user's code": {"email_id": email_id, "secret_code": other_code},
        "code for other id": {"email_id": other_id, "secret_code": code},
        "unknown id": {"email_id": 987654321, "secret_code": code},
        "empty": {"email_id": email_id, "secret_code": ""},
    }
    answers = {name: api.post(VERIFY, data, format="json") for name, data in attempts.items()}
    assert {name: a.status_code for name, a in answers.items()} == dict.fromkeys(attempts, 400)
    # all identical, save the empty one, which is a field error before any lookup
    assert len({answers[n].content for n in attempts if n != "empty"}) == 1

    # A GET of the link (a mail scanner) consumes nothing.
    page = APIClient().get(f"/verify-email/?email_id={email_id}&secret_code={code}")
    assert page.status_code == 200 and not User.objects.get(username=person["username"]).is_email_verified

    # Expired: a day and a bit later, the same good code is refused like the rest.
    with time_machine.travel(timezone.now() + timedelta(days=1, minutes=1)):
        expired = api.post(VERIFY, {"email_id": other_id, "secret_code": other_code}, format="json")
    assert expired.status_code == 400 and expired.content == answers["tampered"].content

    ok = api.post(VERIFY, {"email_id": email_id, "secret_code": code}, format="json")
    reused = api.post(VERIFY, {"email_id": email_id, "secret_code": code}, format="json")
    assert ok.status_code == 200
    assert reused.status_code == 400 and reused.content == answers["tampered"].content
    assert not User.objects.get(username=other["username"]).is_email_verified


def test_messages_carry_ids_only(signup_data, redis_broker):
    # No worker: the message stays in Redis where it can be read.
    person = signup_data()
    assert APIClient().post("/api/users/", person, format="json").status_code == 201
    [raw] = redis_broker.client.hvals(f"{redis_broker.namespace}:critical.msgs")
    message = dramatiq.Message.decode(raw)
    verification = EmailVerification.objects.get(user__username=person["username"])
    assert message.args == (verification.pk,) and message.kwargs == {}
    assert person["email"] not in raw.decode() and person["password"] not in raw.decode()

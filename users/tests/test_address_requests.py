"""Password-reset and resend requests: the web request does the same work for every address, and
the worker's processing of a request is idempotent."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from tasks.errors import SkipRetry
from users import dispatch
from users.errors import AddressRequestGone
from users.models import AddressRequest, OutboundEmail
from users.services import address_requests
from users.tasks import process_address_request
from users.tests.factories import UserFactory

Kind = AddressRequest.Kind


class Recorder:
    """A distributor that only writes down what would have been queued."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def distribute(self, task_type: str, argument: int) -> None:
        self.sent.append((task_type, argument))


def _shape(sql: str) -> str:
    """A statement without its values (addresses, ids and times differ from one request to the next)."""
    sql = re.sub(r"'(?:[^']|'')*'", "?", sql)
    return re.sub(r"\b\d+(?:\.\d+)?\b", "?", sql)


def _post(how: str, path_api: str, path_form: str, address: str):
    if how == "api":
        return APIClient().post(path_api, {"email": address}, format="json")
    return Client().post(path_form, {"email": address})


FLOWS = {
    "reset": ("/api/password-reset/", "/reset-password/"),
    "resend": ("/api/users/resend-verification/", "/verify-email/resend/"),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_throttling")
@pytest.mark.parametrize("how", ["api", "form"])
@pytest.mark.parametrize("flow", list(FLOWS))
@pytest.mark.parametrize("verified", [True, False], ids=["verified", "unverified"])
def test_the_web_request_does_the_same_work_for_known_and_unknown_addresses(how, flow, verified):
    UserFactory(email="known@example.com", is_email_verified=verified)
    UserFactory(email="warm@example.com")
    runs = {}
    for label, address in [
        ("warm", "warm@example.com"),
        ("unknown", "nobody@example.com"),
        ("known", "known@example.com"),
    ]:
        with dispatch.use_distributor(Recorder()) as recorder, CaptureQueriesContext(connection) as captured:
            response = _post(how, *FLOWS[flow], address)
        assert response.status_code in (200, 202), response.content
        runs[label] = ([_shape(q["sql"]) for q in captured.captured_queries], [t for t, _ in recorder.sent])
    assert runs["unknown"] == runs["known"], runs
    # One insert and one message, whatever the address; the lookup is the worker's.
    statements, messages = runs["known"]
    assert [s.split()[0] for s in statements if not s.startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"))] == [
        "INSERT"
    ], statements
    assert messages == [dispatch.PROCESS_ADDRESS_REQUEST]
    assert not OutboundEmail.objects.exists()  # no email yet: nothing was looked up


@pytest.mark.django_db
def test_processing_a_request_twice_queues_its_email_once(django_capture_on_commit_callbacks):
    user = UserFactory(email="Ada@Example.com", is_email_verified=True)
    with django_capture_on_commit_callbacks() as callbacks:
        address_requests.request_record(kind=Kind.PASSWORD_RESET, email="ADA@example.com")
    [request] = AddressRequest.objects.all()
    assert request.address == "ada@example.com" and request.processed_at is None
    assert [c.args for c in callbacks] == [(dispatch.PROCESS_ADDRESS_REQUEST, request.pk)]

    assert address_requests.request_process(request_id=request.pk) is True
    assert address_requests.request_process(request_id=request.pk) is False  # a redelivered message
    [email] = OutboundEmail.objects.all()
    assert email.user == user and email.kind == OutboundEmail.Kind.PASSWORD_RESET
    request.refresh_from_db()
    assert request.processed_at is not None


@pytest.mark.django_db
def test_an_unknown_address_is_processed_and_gets_nothing():
    address_requests.request_record(kind=Kind.VERIFICATION_RESEND, email="nobody@example.com")
    [request] = AddressRequest.objects.all()
    assert address_requests.request_process(request_id=request.pk) is True
    assert not OutboundEmail.objects.exists()
    assert AddressRequest.objects.get().processed_at is not None


@pytest.mark.django_db
def test_the_actor_skips_retries_for_a_request_that_is_gone_or_malformed():
    with pytest.raises(AddressRequestGone):
        address_requests.request_process(request_id=123456)
    with pytest.raises(SkipRetry):
        process_address_request(123456)
    with pytest.raises(SkipRetry):
        process_address_request("1")  # type: ignore[arg-type]


@pytest.mark.django_db
def test_the_actor_logs_the_request_id_never_the_address(caplog):
    address_requests.request_record(kind=Kind.PASSWORD_RESET, email="secret-person@example.com")
    request = AddressRequest.objects.get()
    with caplog.at_level("DEBUG"):
        process_address_request(request.pk)
        process_address_request(request.pk)
    assert "secret-person" not in caplog.text
    assert [r.getMessage() for r in caplog.records if r.name == "users.tasks"] == [
        "processed task",
        "skipped task: already processed",
    ]

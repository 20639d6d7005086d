"""No secret reaches any log line the stack writes: gunicorn's access and error logs, Django's
request warnings (400, 429), the worker's log — whatever a client puts in a URL."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from bankproject.logging import FieldsFormatter, RedactSecrets
from conftest import WorkerProcess, gunicorn, links_in, tampered, wait_for, worker_env


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def _post_json(url: str, body: dict) -> int:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def web(tmp_path) -> Iterator[tuple[str, Path]]:
    """gunicorn as deployed (./gunicorn.conf.py), its stdout and stderr in one file."""
    log_path = tmp_path / "web.log"
    with gunicorn(
        log_path,
        THROTTLE_VERIFY="4/min",
        ANYMAIL_WEBHOOK_SECRET="feedback:a long webhook secret 7f3a",
        ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY="mailgun-signing-key-for-tests",
    ) as url:
        yield url, log_path


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_codes_in_links_reach_no_log(web, smtp_server, redis_broker, signup_data, tmp_path):
    url, web_log = web
    worker = WorkerProcess(tmp_path / "worker.log", worker_env(redis_url=settings.REDIS_URL, smtp=smtp_server)).start()
    try:
        person = signup_data()
        assert _post_json(f"{url}/api/users/", person) == 201
        [message] = wait_for(lambda: smtp_server.to(person["email"]), timeout=60, what="the verification email")
        [(link, email_id, code)] = links_in(message)
        page = link.replace("http://127.0.0.1:8000", url)
        assert _get(page) == 200  # the confirm page
        assert _get(page + "x") == 400  # Django warns "Bad Request" with the request
        assert _get(f"{url}/verify-email/?email_id={email_id}&secret_code={tampered(code)}") == 400
        statuses = [_get(page) for _ in range(4)]  # over THROTTLE_VERIFY: a 429 warning
        assert 429 in statuses
        assert _post_json(f"{url}/api/verify-email/", {"email_id": email_id, "secret_code": code + "x"}) in (400, 429)
        assert worker.terminate() == 0
    finally:
        worker.stop_quietly()
    logs = {"web": web_log.read_text(), "worker": worker.output()}
    assert "GET /verify-email/ HTTP/1.1" in logs["web"]  # the access log is there, and has no query
    assert "Bad Request: /verify-email/" in logs["web"] and "Too Many Requests: /verify-email/" in logs["web"]
    for name, text in logs.items():
        assert code not in text, f"the code is in the {name} log"
        assert code[:12] not in text, f"part of the code is in the {name} log"
        assert "secret_code=" not in text.replace("secret_code=[redacted]", ""), f"a code parameter in the {name} log"


# Log injection -------------------------------------------------------------------------------------
FORGED = "FORGED-LINE"


def _raw_get(url: str, target: bytes, *headers: bytes) -> bytes:
    """A request exactly as typed (urllib would quote the path); the status line of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n")
        sock.sendall(b"".join(header + b"\r\n" for header in headers) + b"\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def _lines_starting_with(text: str, prefix: str) -> list[str]:
    """Every line a log reader would see; ``splitlines`` also breaks at \\x85, \\x1c-\\x1e, U+2028/9."""
    return [line for line in text.splitlines() if line.lstrip().startswith(prefix)]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_request_data_cannot_start_a_line_or_send_terminal_codes(web):
    """Over a socket, byte for byte as sent. gunicorn percent-decodes the path it logs (``%(U)s``)
    and logs the User-Agent as received; Django's "Not Found" warning names the path too."""
    url, web_log = web
    probes = [
        f"/probe/%0a{FORGED}%20-%20admin%20logged%20in".encode(),  # a line feed
        f"/probe/%0d%0a{FORGED}-crlf".encode(),
        f"/probe/%e2%80%a8{FORGED}-u2028".encode(),  # LINE SEPARATOR, once Django decodes the path
        f"/probe/%c2%85{FORGED}-nel".encode(),  # NEXT LINE (C1), a line break to Python and others
        b"/probe/%1b[31mred",  # a terminal colour code
        b"/probe/%1b%5d0;owned%07",  # OSC: sets a terminal's title
    ]
    for target in probes:
        assert _raw_get(url, target) == b"HTTP/1.1 404 Not Found", target
    # A raw ESC byte in the request line or a header: refused outright, or logged escaped.
    assert _raw_get(url, b"/probe/\x1b[32mraw") in (b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 404 Not Found")
    assert _raw_get(url, b"/probe/agent", b"User-Agent: \x1b[33mraw") in (
        b"HTTP/1.1 400 Bad Request",
        b"HTTP/1.1 404 Not Found",
    )
    user_agent = f"User-Agent: agent\t\x9b31m\x85{FORGED}-agent".encode("latin-1")  # tab, C1 CSI and NEL
    assert _raw_get(url, b"/probe/agent", user_agent) == b"HTTP/1.1 404 Not Found"
    # A quote would close the quoted field and add fields of its own.
    assert _raw_get(url, b"/probe/quote", b'User-Agent: x" request_id=forged "y') == b"HTTP/1.1 404 Not Found"
    assert _raw_get(url, b"/probe/done") == b"HTTP/1.1 404 Not Found"
    # The access log line of the last request is written after its answer: wait for it.
    wait_for(lambda: "GET /probe/done HTTP/1.1" in web_log.read_text(encoding="utf-8"), what="the last access line")

    log = web_log.read_text(encoding="utf-8")
    assert _lines_starting_with(log, FORGED) == [], "request data started a line of its own"
    for control in ("\x1b", "\x9b", "\x07", "\r"):
        assert control not in log, f"{control!r} reached the log"
    # What was sent is still there to read, escaped: gunicorn's access log ...
    assert f'"GET /probe/\\x0a{FORGED} - admin logged in HTTP/1.1" 404' in log
    assert f'"GET /probe/\\x0d\\x0a{FORGED}-crlf HTTP/1.1" 404' in log
    assert f'"GET /probe/\\u2028{FORGED}-u2028 HTTP/1.1" 404' in log
    assert f'"GET /probe/\\x85{FORGED}-nel HTTP/1.1" 404' in log
    assert '"GET /probe/\\x1b[31mred HTTP/1.1" 404' in log
    assert f'"agent\\x09\\x9b31m\\x85{FORGED}-agent"' in log
    assert '"x\\" request_id=forged \\"y" request_id=' in log  # gunicorn escapes quotes itself (only those)
    # ... and Django's warning, which escapes its arguments itself; its ``request`` field through the filter.
    assert f"Not Found: /probe/\\n{FORGED} - admin logged in" in log
    assert f"request='GET /probe/\\\\u2028{FORGED}-u2028'" in log


def _written(record: logging.LogRecord, formatter: logging.Formatter) -> str:
    """What the console handler of settings.LOGGING writes for ``record``."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactSecrets())
    handler.handle(record)
    return stream.getvalue()


def _runserver_record(request_line: str) -> logging.LogRecord:
    """The record ``runserver`` makes (django.core.servers.basehttp.WSGIRequestHandler.log_message):
    the raw request line as an argument, the socket as ``request``, nothing escaped."""
    with socket.socket() as sock:
        extra = {"request": sock, "server_time": "06/Dec/2026 20:00:00", "status_code": 404}
        return logging.getLogger("django.server").makeRecord(
            "django.server", logging.WARNING, __file__, 0, '"%s" %s %s', (request_line, "404", "179"), None, extra=extra
        )


@pytest.mark.parametrize("formatter", [FieldsFormatter(), settings.LOGGING["formatters"]["json"]], ids=["text", "json"])
def test_runserver_request_lines_are_written_on_one_line_without_terminal_codes(formatter):
    if isinstance(formatter, dict):
        formatter = logging.config.DictConfigurator({}).configure_formatter(dict(formatter))
    # iso-8859-1 decoded, as runserver reads it: ESC, a vertical tab, NEL, CSI, U+2028 as UTF-8 bytes
    request_line = "GET /a\x1b[31m\x0b\x85" + FORGED + "\x9b2J\x1c\xe2\x80\xa8x\x7f HTTP/1.1"
    written = _written(_runserver_record(request_line), formatter)
    assert written.count("\n") == 1 and written.endswith("\n")
    assert _lines_starting_with(written, FORGED) == []
    assert not any(0x80 <= ord(c) <= 0x9F or ord(c) < 0x20 or ord(c) == 0x7F for c in written.rstrip("\n"))
    expected = "GET /a\\x1b[31m\\x0b\\x85" + FORGED + "\\x9b2J\\x1c\u00e2\\x80\u00a8x\\x7f HTTP/1.1"  # â, ¨ printable
    if isinstance(formatter, FieldsFormatter):
        assert f'WARNING django.server "{expected}" 404 179 ' in written
    else:
        assert json.loads(written)["message"] == f'"{expected}" 404 179'


def test_escaped_are_the_message_and_string_fields_not_the_traceback():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("tasks").makeRecord(
            "tasks",
            logging.ERROR,
            __file__,
            0,
            "failed for %s",
            ("x\ny\u2029z\tw",),
            sys.exc_info(),
            extra={"path": "/p\r\n\u2028q", "attempts": 3},
        )
    written = _written(record, FieldsFormatter())
    first, *traceback = written.splitlines()
    # the fields belong to the message's line, before the traceback
    assert first.endswith(r"failed for x\x0ay\u2029z\x09w path='/p\\x0d\\x0a\\u2028q' attempts=3")
    assert traceback[0] == "Traceback (most recent call last):" and traceback[-1] == "ValueError: boom"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_forged_webhook_call_is_one_warning_line_not_a_traceback(web):
    """Anyone can post to a provider's webhook: each refused call wrote an ERROR with two chained
    tracebacks (a review), a way to flood the log and bury what matters."""
    url, web_log = web
    forged = urllib.request.Request(
        f"{url}/anymail/mailgun/tracking/",
        data=b'{"signature": {}, "event-data": {}}',
        headers={"Content-Type": "application/json", "Authorization": "Basic d3Jvbmc6d3Jvbmc="},
        method="POST",
    )
    try:
        urllib.request.urlopen(forged, timeout=10)
    except urllib.error.HTTPError as error:
        assert error.code == 400
    else:
        pytest.fail("a forged webhook call was accepted")
    line = wait_for(
        lambda: next((x for x in web_log.read_text().splitlines() if "AnymailWebhookValidationFailure" in x), None),
        timeout=30,
        what="the refused call's log line",
    )
    assert " WARNING " in f" {line} " and "Traceback" not in web_log.read_text()

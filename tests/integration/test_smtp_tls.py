"""SMTP over TLS with a private CA: refused without the CA bundle, delivered with it.

A throwaway CA and certificates for 127.0.0.1/localhost are made at test time with the ``openssl``
CLI; aiosmtpd serves STARTTLS (``require_starttls=True``) or implicit TLS with them. Mail goes
through the project's own paths: ``users.mail.send`` in process, and a sign-up delivered by a real
``rundramatiq`` worker configured only through the environment.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.conf import settings as django_settings
from django.core.mail import EmailMessage
from rest_framework.test import APIClient

from conftest import SmtpSink, WorkerProcess, free_port, links_in, wait_for, worker_env
from users import mail

pytestmark = pytest.mark.integration


# --- A throwaway PKI -----------------------------------------------------------------------------
def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)


@dataclass
class Pki:
    directory: Path
    ca: Path = field(init=False)
    ca_key: Path = field(init=False)
    server: Path = field(init=False)  # for 127.0.0.1 and localhost

    def __post_init__(self) -> None:
        self.ca, self.ca_key = self.directory / "ca.pem", self.directory / "ca.key"
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", self.ca_key, "-out", self.ca, "-days", "2", "-subj", "/CN=simplebank test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        self.server = self.issue("localhost")

    def issue(self, name: str, *, san: str = "DNS:localhost,IP:127.0.0.1", usage: str = "serverAuth") -> Path:
        """A certificate signed by this CA, with its key in the same PEM file."""
        key, csr, cert = (self.directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(
            f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            f"extendedKeyUsage={usage}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        )
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", key, "-out", csr, "-subj", f"/CN={name}",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-CAcreateserial",
            "-days", "2", "-extfile", extensions, "-out", cert,
        )  # fmt: skip
        bundle = self.directory / f"{name}.pem"
        bundle.write_text(cert.read_text() + key.read_text())
        return bundle

    def server_context(self, cert: Path, *, client_ca: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert)
        if client_ca:  # ask for a client certificate and verify it against this CA
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(cafile=self.ca)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


# --- TLS SMTP servers ----------------------------------------------------------------------------
@dataclass
class TlsSink(SmtpSink):
    """``SmtpSink`` that also records, for each message accepted, how its session was secured."""

    tls: list[dict[str, Any]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        ssl_object = server.transport.get_extra_info("ssl_object")
        with self.lock:
            self.tls.append(
                {
                    "peer": session.peer,  # (address, port) of the client's connection
                    "starttls": session.ssl is not None,  # aiosmtpd sets it after a STARTTLS handshake
                    "version": ssl_object.version() if ssl_object else None,
                    "client_cert": ssl_object.getpeercert() if ssl_object else None,
                }
            )
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def tls_server(pki) -> Iterator[Callable[..., TlsSink]]:
    """Start an aiosmtpd server: ``starttls`` (STARTTLS required) or ``implicit`` (TLS from the start)."""
    controllers: list[Controller] = []

    def start(
        mode: str, *, cert: Path | None = None, require_starttls: bool = True, client_ca: bool = False
    ) -> TlsSink:
        sink = TlsSink(port=free_port())
        context = pki.server_context(cert or pki.server, client_ca=client_ca)
        if mode == "starttls":
            tls = {"tls_context": context, "require_starttls": require_starttls}
        else:
            tls = {"ssl_context": context}
        controller = Controller(sink, hostname=sink.host, port=sink.port, **tls)
        controller.start()
        controllers.append(controller)
        sink.loop = controller.loop
        return sink

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def smtp_settings(settings) -> Callable[..., Any]:
    """Point the project's SMTP backend at ``sink`` with the given TLS settings.

    It is named here because the ``settings`` fixture bypasses settings.py, where Django's name is
    mapped to it; the mapping has its own test, and the worker test below goes through it.
    """

    def configure(sink: SmtpSink, **overrides: Any) -> Any:
        settings.EMAIL_BACKEND = "bankproject.smtp.EmailBackend"
        settings.EMAIL_HOST = sink.host
        settings.EMAIL_PORT = sink.port
        settings.EMAIL_TIMEOUT = 10
        settings.EMAIL_USE_TLS = False
        settings.EMAIL_USE_SSL = False
        settings.EMAIL_SSL_CAFILE = ""
        settings.EMAIL_SSL_CERTFILE = None
        settings.EMAIL_SSL_KEYFILE = None
        for name, value in overrides.items():
            setattr(settings, name, value)
        return settings

    return configure


@pytest.fixture(autouse=True)
def _fresh_connection() -> Iterator[None]:
    mail.close()
    yield
    mail.close()


def _message(to: str = "reader@example.com") -> EmailMessage:
    return EmailMessage(subject="hello over TLS", body="body", to=[to])


# --- In process, through users.mail.send ---------------------------------------------------------
@pytest.mark.parametrize("require_starttls", [True, False], ids=["server requires STARTTLS", "plain text allowed"])
def test_starttls_to_a_private_ca_without_the_bundle_is_refused_and_nothing_is_sent(
    tls_server, smtp_settings, require_starttls
):
    sink = tls_server("starttls", require_starttls=require_starttls)
    smtp_settings(sink, EMAIL_USE_TLS=True)
    with pytest.raises(ssl.SSLCertVerificationError, match="CERTIFICATE_VERIFY_FAILED"):
        mail.send(_message())
    # No fallback to plain text, even where the server would take it: no MAIL/RCPT ever came.
    assert sink.messages == [] and sink.attempts == 0


def test_starttls_with_the_ca_bundle_is_delivered_over_tls(tls_server, smtp_settings, pki):
    sink = tls_server("starttls")
    smtp_settings(sink, EMAIL_USE_TLS=True, EMAIL_SSL_CAFILE=str(pki.ca))
    mail.send(_message("first@example.com"))
    mail.send(_message("second@example.com"))  # on the thread's kept connection
    assert [str(m["To"]) for m in sink.messages] == ["first@example.com", "second@example.com"]
    assert len({t["peer"] for t in sink.tls}) == 1  # one connection (its EHLO count is 2: before and after STARTTLS)
    assert all(t["starttls"] and t["version"] in {"TLSv1.2", "TLSv1.3"} for t in sink.tls), sink.tls


def test_implicit_tls_with_the_ca_bundle_is_delivered(tls_server, smtp_settings, pki):
    sink = tls_server("implicit")
    smtp_settings(sink, EMAIL_USE_SSL=True, EMAIL_SSL_CAFILE=str(pki.ca))
    mail.send(_message())
    assert [str(m["To"]) for m in sink.messages] == ["reader@example.com"]
    [session] = sink.tls
    assert session["version"] in {"TLSv1.2", "TLSv1.3"} and not session["starttls"]


def test_implicit_tls_without_the_ca_bundle_is_refused(tls_server, smtp_settings):
    sink = tls_server("implicit")
    smtp_settings(sink, EMAIL_USE_SSL=True)
    with pytest.raises(ssl.SSLCertVerificationError, match="CERTIFICATE_VERIFY_FAILED"):
        mail.send(_message())
    assert sink.messages == [] and sink.connections == 0


def test_the_host_name_is_checked_even_when_the_ca_is_trusted(tls_server, smtp_settings, pki):
    sink = tls_server("starttls", cert=pki.issue("elsewhere", san="DNS:mail.elsewhere.test"))
    smtp_settings(sink, EMAIL_USE_TLS=True, EMAIL_SSL_CAFILE=str(pki.ca))
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        mail.send(_message())
    assert sink.messages == [] and sink.attempts == 0


def test_a_client_certificate_is_presented_and_the_server_still_verified(tls_server, smtp_settings, pki):
    sink = tls_server("starttls", client_ca=True)
    client = pki.issue("simplebank-worker", san="DNS:simplebank-worker", usage="clientAuth")
    smtp_settings(sink, EMAIL_USE_TLS=True, EMAIL_SSL_CAFILE=str(pki.ca), EMAIL_SSL_CERTFILE=str(client))
    mail.send(_message())
    [session] = sink.tls
    assert session["client_cert"]["subject"] == ((("commonName", "simplebank-worker"),),)


def test_a_kept_connection_is_not_reused_after_the_tls_settings_change(tls_server, smtp_settings, pki):
    sink = tls_server("starttls")
    configured = smtp_settings(sink, EMAIL_USE_TLS=True, EMAIL_SSL_CAFILE=str(pki.ca))
    configured.EMAIL_CONNECTION_IDLE_CHECK = 3600
    mail.send(_message())
    configured.EMAIL_SSL_CAFILE = ""  # the bundle removed: the next send must verify afresh, and fail
    with pytest.raises(ssl.SSLCertVerificationError):
        mail.send(_message())
    assert len(sink.messages) == 1


# --- Start-up refusals and the backend mapping, as a process reads the environment ---------------
def _settings_in_a_process(**env: str) -> subprocess.CompletedProcess[str]:
    code = "import django; django.setup(); from django.conf import settings; print(settings.EMAIL_BACKEND)"
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("EMAIL_")}
    environment = inherited | {"DJANGO_SETTINGS_MODULE": "bankproject.settings_test", **env}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=django_settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_djangos_smtp_backend_named_in_the_environment_gets_ours():
    result = _settings_in_a_process(EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "bankproject.smtp.EmailBackend"


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"EMAIL_USE_TLS": "true", "EMAIL_USE_SSL": "true"}, "mutually exclusive"),
        (
            {"EMAIL_SSL_CAFILE": "/nonexistent/company-ca.pem"},
            "EMAIL_SSL_CAFILE='/nonexistent/company-ca.pem' is not a file",
        ),
        ({"EMAIL_SSL_CAFILE": "manage.py"}, "holds no usable CA certificate"),
        ({"EMAIL_SSL_KEYFILE": "manage.py"}, "EMAIL_SSL_KEYFILE is set without EMAIL_SSL_CERTFILE"),
    ],
    ids=["TLS and SSL", "missing CA file", "not a PEM bundle", "key without certificate"],
)
def test_bad_tls_settings_are_refused_at_start_up(env, complaint):
    result = _settings_in_a_process(**env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and complaint in result.stderr, result.stderr[-2000:]


# --- End to end: a real worker process configured through the environment -----------------------
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("with_ca", [True, False], ids=["with the CA bundle", "without it"])
def test_a_worker_process_sends_the_verification_email_over_starttls_to_a_private_ca(
    tls_server, pki, signup_data, redis_broker, tmp_path, with_ca
):
    sink = tls_server("starttls")
    tls_env = {"EMAIL_USE_TLS": "true", "EMAIL_TIMEOUT": "10"}
    if with_ca:
        tls_env["EMAIL_SSL_CAFILE"] = str(pki.ca)
    worker = WorkerProcess(
        tmp_path / "worker.log", worker_env(redis_url=django_settings.REDIS_URL, smtp=sink, **tls_env)
    )
    worker.start()
    try:
        data = signup_data()
        assert APIClient().post("/api/users/", data, format="json").status_code == 201
        if with_ca:
            [message] = wait_for(lambda: sink.to(data["email"]), timeout=60, what="the email over STARTTLS")
            assert [str(m["To"]) for m in sink.messages] == [data["email"]]
            assert len(links_in(message)) == 1
            assert all(t["starttls"] for t in sink.tls)
        else:
            # What operators see: the verification error, and Dramatiq scheduling a retry.
            wait_for(
                lambda: "CERTIFICATE_VERIFY_FAILED" in worker.output() and "Retrying message" in worker.output(),
                timeout=60,
                what="the failed handshake retried in the worker's log",
            )
            assert sink.messages == [] and sink.attempts == 0
        assert worker.terminate() == 0, worker.output()[-2000:]
    finally:
        worker.stop_quietly()

"""One SMTP connection per thread, against a real SMTP server (aiosmtpd)."""

import smtplib
import threading

import pytest
from django.core.mail import EmailMessage

from users import mail


def _message(n: int) -> EmailMessage:
    return EmailMessage(subject=f"hello {n}", body="body", to=[f"reader{n}@example.com"])


@pytest.fixture(autouse=True)
def _fresh_connection():
    mail.close()
    yield
    mail.close()


@pytest.mark.parametrize(
    ("max_messages", "connections"),
    [(100, 1), (2, 3)],
    ids=["consecutive emails share one connection", "it is renewed after max messages"],
)
def test_five_emails_on_one_thread(smtp_server, settings, max_messages, connections):
    settings.EMAIL_CONNECTION_IDLE_CHECK = 3600
    settings.EMAIL_CONNECTION_MAX_MESSAGES = max_messages
    for n in range(5):
        mail.send(_message(n))
    assert len(smtp_server.messages) == 5
    assert smtp_server.connections == connections


def test_each_thread_has_its_own_connection(smtp_server, settings):
    settings.EMAIL_CONNECTION_IDLE_CHECK = 3600
    threads = [threading.Thread(target=lambda k=k: [mail.send(_message(k * 10 + n)) for n in range(3)]) for k in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(smtp_server.messages) == 6
    assert smtp_server.connections == 2


def test_a_connection_the_server_dropped_while_idle_is_replaced_before_sending(smtp_server, settings):
    settings.EMAIL_CONNECTION_IDLE_CHECK = 0  # every reuse is checked with a NOOP
    mail.send(_message(1))
    smtp_server.drop_connections()  # the relay's idle timeout
    mail.send(_message(2))  # no error, no retry needed: the NOOP saw the drop
    assert [m["Subject"] for m in smtp_server.messages] == ["hello 1", "hello 2"]
    assert smtp_server.connections == 2


def test_a_failed_send_throws_the_connection_away_and_the_next_one_reconnects(smtp_server, settings):
    settings.EMAIL_CONNECTION_IDLE_CHECK = 3600  # no NOOP: the drop surfaces as a send error
    mail.send(_message(1))
    smtp_server.drop_connections()
    with pytest.raises((smtplib.SMTPServerDisconnected, OSError)):
        mail.send(_message(2))  # never repeated here; the actor's retry decides
    mail.send(_message(3))
    assert [m["Subject"] for m in smtp_server.messages] == ["hello 1", "hello 3"]
    assert smtp_server.connections == 2


def test_a_change_of_smtp_server_is_followed(smtp_server, settings):
    mail.send(_message(1))
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.send(_message(2))
    from django.core import mail as django_mail

    assert [m.subject for m in django_mail.outbox] == ["hello 2"]
    assert len(smtp_server.messages) == 1

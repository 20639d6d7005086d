"""Django's SMTP backend with a CA bundle of our choosing (``EMAIL_SSL_CAFILE``).

Django 5.2's ``EmailBackend.ssl_context`` is ``ssl.create_default_context()`` (the system's trust
store, nothing else), or, when a client certificate is set, a bare ``SSLContext`` that trusts no
CA at all, so no server verifies. A relay with a company CA therefore fails every send with
``CERTIFICATE_VERIFY_FAILED``. This subclass differs only in that context: it trusts
``EMAIL_SSL_CAFILE`` when set (instead of the system store) or the system store otherwise, adds the
client certificate if one is set, and always verifies the certificate and the host name. There is
never a fallback to plain text: a failed handshake raises (an ``OSError``, retried as transient).

It also sends every body quoted-printable (7-bit): Django sends UTF-8 bodies 8-bit, and its
``sendmail()`` never declares ``BODY=8BITMIME`` (RFC 6152), so a strict relay may refuse or mangle
them. Only here, over SMTP: the console backend of ``make run`` keeps links readable.

Settings name ``django.core.mail.backends.smtp.EmailBackend`` is mapped to this class in
``bankproject/settings.py``.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from email import charset as email_charset
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends import smtp
from django.utils.functional import cached_property

_UTF8_QP = email_charset.Charset("utf-8")
_UTF8_QP.body_encoding = email_charset.QP


class EmailBackend(smtp.EmailBackend):
    def __init__(self, *args: Any, ssl_cafile: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ssl_cafile = settings.EMAIL_SSL_CAFILE if ssl_cafile is None else ssl_cafile

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        for message in email_messages:
            if message.encoding in (None, "utf-8"):
                message.encoding = _UTF8_QP
        return super().send_messages(email_messages)

    @cached_property
    def ssl_context(self) -> ssl.SSLContext:
        # With a cafile, create_default_context() trusts that bundle only (not the system store).
        context = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH, cafile=self.ssl_cafile or None)
        if self.ssl_certfile or self.ssl_keyfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)  # type: ignore[arg-type]
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        return context

"""Log formatting and redaction.

- ``FieldsFormatter``: the message followed by the structured fields passed in ``extra``.
- ``RedactSecrets``: a filter on every handler. Links carry their secret in the query string
  (``secret_code``, a password reset's ``token``); any log line that names a request — Django's
  "Bad Request: …" and 429 warnings carry the request object, ``runserver`` and gunicorn print the
  request line — would write a live code down, and a code copied from a log verifies an address.
  The filter blanks the value of every such parameter in the message, and replaces a request
  object in the record by its method and path only.
"""

from __future__ import annotations

import logging
import re

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

# Query parameters and JSON fields whose values are secrets (links, tokens, passwords).
SECRET_NAMES = ("secret_code", "token", "refresh", "access", "password", "new_password", "current_password", "code")
_SECRET_PARAM = re.compile(r"(?i)\b(" + "|".join(SECRET_NAMES) + r")(=|%3D)[^&\s\"'<>]*")


def redact(text: str) -> str:
    return _SECRET_PARAM.sub(r"\1\2[redacted]", text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        if request is not None and hasattr(request, "path"):
            record.request = f"{getattr(request, 'method', '')} {request.path}"
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the formatter to report
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        for name, value in list(vars(record).items()):
            if name not in _STANDARD and isinstance(value, str) and (cleaned_value := redact(value)) != value:
                setattr(record, name, cleaned_value)
        return True


class FieldsFormatter(logging.Formatter):
    """``2026-11-28 16:00:00,000 INFO tasks enqueued task type=... payload=...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if fields:
            line += " " + " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in fields.items())
        return line

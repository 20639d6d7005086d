r"""Log formatting and redaction.

- ``FieldsFormatter``: the message followed by the structured fields passed in ``extra``.
- ``RedactSecrets``: a filter on every handler. Links carry their secret in the query string
  (``secret_code``, a password reset's ``token``); any log line that names a request — Django's
  "Bad Request: …" and 429 warnings carry the request object, ``runserver`` and gunicorn print the
  request line — would write a live code down, and a code copied from a log verifies an address.
  The filter blanks the value of every such parameter in the message, and replaces a request
  object in the record by its method and path only.

  It also escapes control characters, so request data can neither start a line of its own (a
  ``%0a`` in a path, which the server decodes to a line feed, once wrote a forged line into the
  access log) nor send a terminal its codes (ESC, C1's CSI): C0 (``\x00``-``\x1f``, line feed and
  tab included), DEL, C1 (``\x80``-``\x9f``, NEL among them) and U+2028/U+2029 become visible
  escapes (``\x0a``, ``\u2028``) in the formatted message and in string ``extra`` fields. A
  traceback is added by the formatter after the filter, so it keeps its lines.
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


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_one(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``"a\\nb\\x1b[31m"`` -> ``"a\\x0ab\\x1b[31m"`` as visible text: one line, no terminal codes."""
    return _CONTROL.sub(_escape_one, text)


def clean(text: str) -> str:
    return escape_controls(redact(text))


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        if request is not None and hasattr(request, "path"):
            record.request = f"{getattr(request, 'method', '')} {request.path}"
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the formatter to report
            return True
        cleaned = clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        for name, value in list(vars(record).items()):
            if name not in _STANDARD and isinstance(value, str) and (cleaned_value := clean(value)) != value:
                setattr(record, name, cleaned_value)
        return True


class RefusedWebhook(logging.Filter):
    """A webhook call refused for its secret or signature (anymail's
    ``AnymailWebhookValidationFailure``, which Django logs at ERROR with its chained tracebacks):
    one WARNING line. Anyone on the internet can send one, and each wrote dozens of lines of
    traceback (a review); the line (Django's: the exception's words) still says why, and the
    request's line which webhook."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class FieldsFormatter(logging.Formatter):
    """``2026-11-28 16:00:00,000 INFO tasks enqueued task type=... payload=...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        """The fields on the message's line; a traceback, if any, follows on its own lines."""
        line = super().formatMessage(record)
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if fields:
            line += " " + " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in fields.items())
        return line

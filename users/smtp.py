"""What an SMTP answer means for the email it was about (RFC 5321 reply codes, RFC 3463 enhanced codes).

- **Permanent for this email** (failed at once, never retried): a 5xx to ``RCPT`` or to ``DATA`` —
  e.g. ``550 5.1.1`` no such user, ``550 5.7.1`` rejected by policy, ``554`` transaction failed.
- **Transient** (retried with backoff): every 4xx; ``552``/``x.2.2`` (mailbox full: RFC 5321 §4.5.3.1.10
  asks clients to treat a 552 to RCPT as temporary, and RFC 3463 calls a full mailbox a condition
  that may clear); timeouts, refused or dropped connections, TLS failures.
- **About us** (retried, and logged at ERROR and counted as a configuration problem): the server
  refusing our credentials (``530``/``534``/``535``, any ``x.7.8`` — at ``RCPT`` too, where some
  relays first ask for them), a relay refusing to relay for us ("Relay access denied"), our sender
  at ``MAIL FROM``, or our ``HELO``. One person's address is not to blame, so the email must not fail for good: it goes
  out once the configuration is fixed.
Where the server gives an enhanced status code, its class (the first digit) decides over the basic
code (a ``550 4.2.0`` is transient).
"""

from __future__ import annotations

import enum
import re
import smtplib
from dataclasses import dataclass

_ENHANCED = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_AUTH_CODES = {530, 534, 535, 538}


class Verdict(enum.Enum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    CONFIGURATION = "configuration"


@dataclass(frozen=True)
class Answer:
    verdict: Verdict
    description: str  # what the server said (or the error), recorded as the email's last_error


def classify(exc: BaseException) -> Answer:
    """The verdict for an error raised while sending one email to one recipient."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        answers = [(code, _text(msg)) for code, msg in exc.recipients.values()]
        description = "; ".join(f"{code} {text}" for code, text in answers) or "recipient refused"
        if any(_about_us(code, text) for code, text in answers):  # a relay may ask for AUTH only at RCPT
            return Answer(Verdict.CONFIGURATION, description)
        verdicts = {_about_the_message(code, text) for code, text in answers}
        verdict = Verdict.PERMANENT if verdicts == {Verdict.PERMANENT} else Verdict.TRANSIENT
        return Answer(verdict, description)
    if isinstance(exc, smtplib.SMTPSenderRefused | smtplib.SMTPHeloError | smtplib.SMTPAuthenticationError):
        return Answer(Verdict.CONFIGURATION, _describe(exc))
    if isinstance(exc, smtplib.SMTPNotSupportedError):  # e.g. STARTTLS or AUTH the server doesn't offer
        return Answer(Verdict.CONFIGURATION, _describe(exc))
    if isinstance(exc, smtplib.SMTPResponseException):  # SMTPDataError, and any other coded answer
        code, text = exc.smtp_code, _text(exc.smtp_error)
        if _about_us(code, text):
            return Answer(Verdict.CONFIGURATION, f"{code} {text}")
        verdict = _about_the_message(code, text) if isinstance(exc, smtplib.SMTPDataError) else Verdict.TRANSIENT
        return Answer(verdict, f"{code} {text}")
    return Answer(Verdict.TRANSIENT, _describe(exc))


# Our relay refusing to relay for us (not authenticated, or not allowed): Postfix "Relay access
# denied", Sendmail "Relaying denied", Exim "relay not permitted", Exchange "Unable to relay".
_RELAY_REFUSED = re.compile(r"\brelay(?:ing)?\s+(?:access\s+)?(?:denied|not\s+permitted)|\bunable\s+to\s+relay\b", re.I)


def _about_us(code: int, text: str) -> bool:
    """Our credentials (``530``/``534``/``535``/``538``, ``x.7.8``), or our relay refusing to relay
    for us — when the reply is its own (an ``x.7.x`` enhanced code, or none): a ``5.1.1`` quoting a
    recipient's server that said "Relay access denied" is about the recipient."""
    _, subject, detail = _enhanced(text)
    if code in _AUTH_CODES or (subject, detail) == ("7", "8"):
        return True
    return subject in ("", "7") and bool(_RELAY_REFUSED.search(text))


def _about_the_message(code: int, text: str) -> Verdict:
    """A reply to RCPT or DATA: permanent for 5xx, unless the enhanced code or 552 says otherwise."""
    klass, subject, detail = _enhanced(text)
    if (subject, detail) == ("2", "2") or code == 552:
        return Verdict.TRANSIENT  # mailbox full
    if klass:
        return Verdict.PERMANENT if klass == "5" else Verdict.TRANSIENT
    return Verdict.PERMANENT if 500 <= code < 600 else Verdict.TRANSIENT


def _enhanced(text: str) -> tuple[str, str, str]:
    match = _ENHANCED.match(text)
    return (match.group(1), match.group(2), match.group(3)) if match else ("", "", "")


def _text(message: bytes | str) -> str:
    return message.decode(errors="replace") if isinstance(message, bytes) else str(message)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_text(exc.smtp_error)}"
    return f"{type(exc).__name__}: {exc}"

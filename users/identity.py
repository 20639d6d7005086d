# ruff: noqa: RUF002 - the docstring shows the look-alike letters on purpose
"""What makes two addresses, or two usernames, the same: one stored form of each, and its rules.

**Addresses.** The local part must be plain ASCII (RFC 5321 dot-atom: letters, digits and
``!#$%&'*+/=?^_`{|}~-`` between dots; no quoted strings, no comments) and at most 64 characters.
Unicode look-alikes live in the local part (``K`` Kelvin sign, dotless ``ı``, ``İ``, long ``ſ``):
PostgreSQL's ``LOWER()``/``UPPER()`` and Python's ``lower()`` fold them differently, so any
case-insensitive comparison of them was an oracle or a way to squat someone's address. Non-ASCII
local parts also need SMTPUTF8, which most relays and many mailbox providers refuse. So they are
refused here (a clear ``400``) rather than folded by some rule the database might not share.
The domain may be typed in Unicode: it is stored as its IDNA A-label (``bücher.de`` →
``xn--bcher-kva.de``; IDNA's nameprep maps compatibility forms and case), lower-cased. It must be
a dotted public name: no IP literal (``[127.0.0.1]``), no single label (``localhost``), no
special-use TLD (``.local``, ``.test``, ``.invalid``, …), a TLD of letters.

So the stored address is pure ASCII, and its canonical form — what uniqueness, look-ups,
enumeration and cooldowns compare — is simply its lower case, which PostgreSQL (a generated,
uniquely indexed column, ``users_user.email_canonical``) and Python compute identically.

**Usernames.** NFKC first (fullwidth ``ａｄｍｉｎ`` becomes ``admin``), then ASCII letters, digits and
``.+-_`` only (an ``@`` would read as an address at the log-in), so a Cyrillic ``аdmin`` is refused
instead of sitting beside ``admin``; unique case-insensitively (``Admin`` is ``admin``) through the
generated ``username_canonical``.
"""

from __future__ import annotations

import re
import unicodedata

import idna
from django.contrib.auth.validators import ASCIIUsernameValidator
from django.core.exceptions import ValidationError
from django.utils.deconstruct import deconstructible

EMAIL_MAX_LENGTH = 254
LOCAL_PART_MAX_LENGTH = 64
USERNAME_MAX_LENGTH = 150

INVALID_EMAIL = "Enter a valid email address."
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*\Z")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
_TLD = re.compile(r"(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})\Z")
# RFC 2606 / 6761 / 6762 special-use names, and private names that never reach the public DNS.
SPECIAL_USE_TLDS = frozenset(
    {"alt", "arpa", "corp", "example", "home", "internal", "intranet", "invalid", "lan", "local"}
    | {"localdomain", "localhost", "onion", "private", "test"}
)


def normalize_email(value: str) -> str:
    """The stored form of an address: as typed, but the domain as a lower-case A-label.

    Raises ``ValidationError`` for anything that is not a deliverable public address (see the
    module docstring). Pure ASCII out.
    """
    if not isinstance(value, str) or not value or len(value) > EMAIL_MAX_LENGTH * 4:
        raise ValidationError(INVALID_EMAIL, code="invalid")
    value = value.strip()
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        raise ValidationError(INVALID_EMAIL, code="invalid")
    if not local.isascii():
        raise ValidationError(
            "Use an address whose part before the @ has only ASCII letters, digits and .!#$%&'*+/=?^_`{|}~-.",
            code="non_ascii_local_part",
        )
    if len(local) > LOCAL_PART_MAX_LENGTH or not _DOT_ATOM.match(local):
        raise ValidationError(INVALID_EMAIL, code="invalid")
    domain = _public_domain(domain)
    address = f"{local}@{domain}"
    if len(address) > EMAIL_MAX_LENGTH:
        raise ValidationError(INVALID_EMAIL, code="invalid")
    return address


def a_label(domain: str) -> str:
    """A domain as mail systems and browsers resolve it, lower-case ASCII: IDNA2008 with UTS #46's
    non-transitional mapping — "faß.de" is xn--fa-hia.de, not Python's IDNA 2003 "fass.de", another
    registrable domain, whose owner would have got this person's links (a review). Raises
    ``idna.IDNAError`` or ``UnicodeError`` for a name IDNA refuses (an A-label that decodes to
    nothing, "xn--zz")."""
    return idna.encode(domain.rstrip("."), uts46=True, transitional=False).decode("ascii").lower()


def _public_domain(domain: str) -> str:
    if domain.startswith("[") or any(unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Zl", "Zp"} for ch in domain):
        raise ValidationError(INVALID_EMAIL, code="invalid")
    try:
        ascii_domain = a_label(domain)
    except (idna.IDNAError, UnicodeError):
        raise ValidationError(INVALID_EMAIL, code="invalid") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValidationError("Use an address at a public domain, such as name@example.com.", code="domain")
    if not _TLD.match(labels[-1]) or labels[-1] in SPECIAL_USE_TLDS:
        raise ValidationError("Use an address at a public domain, such as name@example.com.", code="domain")
    return ascii_domain


def canonical_email(value: str) -> str | None:
    """What two spellings of one address share (``email_canonical``); None if it is not valid."""
    try:
        return normalize_email(value).lower()
    except ValidationError:
        return None


@deconstructible
class EmailAddressValidator:
    """Model/form/serializer validator: the address must survive ``normalize_email``."""

    def __call__(self, value: str) -> None:
        normalize_email(value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EmailAddressValidator)


def normalize_username(value: str) -> str:
    """NFKC, then the ASCII rule. Raises ``ValidationError``."""
    if not isinstance(value, str):
        raise ValidationError("Enter a valid username.", code="invalid")
    username = unicodedata.normalize("NFKC", value)
    if not username or len(username) > USERNAME_MAX_LENGTH:
        raise ValidationError(f"Use 1 to {USERNAME_MAX_LENGTH} characters.", code="invalid")
    UsernameValidator()(username)
    if username.lower() in RESERVED_USERNAMES:
        raise ValidationError("This username is reserved: choose another.", code="reserved")
    return username


# Names the API's own routes take under /api/users/<username>/: a user called "me" could never be
# reached there (a banker's change would rename the banker), nor "resend-verification". Refused
# for new accounts only (sign-up, create_user): an account that has one keeps it, and the admin
# still saves it.
RESERVED_USERNAMES = frozenset({"me", "resend-verification"})


def typed_login(value: str) -> str:
    """A username or address as typed at a log-in, read the way every log-in form reads it (the
    admin's NFKC-normalises, all strip): ``ａｄａ＠example.com `` is ``ada@example.com``."""
    return unicodedata.normalize("NFKC", value).strip()


# No account's username (150) or address (254) is longer, as a log-in reads it.
LOGIN_MAX_LENGTH = 254


def login_length_check(value: str) -> None:
    """``ValidationError`` (a field error) for a log-in name longer, as read (NFKC), than any
    account's: one character can become 18 (U+FDFA), so a name within the field's limit could
    overflow what the lockout stores — a 500 after a password hash, uncounted by any limit. Refused
    before any hash."""
    if len(value) > LOGIN_MAX_LENGTH or len(typed_login(value)) > LOGIN_MAX_LENGTH:
        raise ValidationError(
            f"Ensure this value has at most {LOGIN_MAX_LENGTH} characters once read as typed.", code="max_length"
        )


def canonical_username(value: str) -> str:
    """What two spellings of one username share (``username_canonical``)."""
    return unicodedata.normalize("NFKC", value).lower() if isinstance(value, str) else ""


@deconstructible
class UsernameValidator(ASCIIUsernameValidator):
    # No "@": a log-in with an "@" is read as an address, so such a username could never be typed to
    # log in, and it read as someone else's address where the lockout met it.
    regex = r"^[\w.+-]+\Z"
    message = "Enter a valid username: ASCII letters, digits and ./+/-/_ only (no @: that is for addresses)."


# --- Names that go into emails and pages -------------------------------------------------------
_FORBIDDEN_NAME_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
# A scheme (https://, mailto:), "www.", a dot between a letter or digit and letters with no space
# ("evil.example", "bank1.com", "st.john": people write "St. John"), or an IPv4 address. Read in
# NFKC, with the ideographic full stop a dot too (IDNA reads "evil。com" as "evil.com"), so the
# fullwidth and one-dot-leader look-alikes a mail client still turns into a link are caught.
_LINK_LIKE = re.compile(
    r"(?:[a-z][a-z0-9+.-]*://|\b(?:mailto|tel|javascript|data):|www[.。]|[^\W_][.。][^\W\d_]{2,}"
    r"|\b\d{1,3}(?:[.。]\d{1,3}){3}\b)",
    re.IGNORECASE,
)
# Default-ignorable code points that are not format characters (those are refused above): a
# browser's IDNA mapping drops them, so "help\ufe0f.com" opens help.com, and a linkifier keeps
# them inside the link it makes. Read as absent when looking for links; a name of nothing else
# (Hangul fillers print as blanks) is no name.
# U+2800 (a Braille blank) is no default-ignorable, but prints as nothing all the same.
_INVISIBLE = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef]"
)
# Marks stacked on one letter: written languages need a few, more spill over the lines around them.
_MAX_STACKED_MARKS = 4
NAME_MAX_LENGTH = 255


def normalize_full_name(value: str, *, max_length: int = NAME_MAX_LENGTH, missing: str = "Enter your name.") -> str:
    """A person's name as we print it: NFC, single spaces, no control, format or bidi characters,
    no line breaks and nothing that reads as a link. (A passkey's name too.)

    Names are shown on pages, in the admin and to bankers, never in an email (emails carry the
    bank's words only); refusing these keeps the bank's pages from carrying someone else's link.
    """
    if not isinstance(value, str):
        raise ValidationError(missing, code="invalid")
    if any(unicodedata.category(ch) in _FORBIDDEN_NAME_CATEGORIES for ch in value):
        raise ValidationError("Names can't contain line breaks, control or text-direction characters.", code="control")
    name = " ".join(unicodedata.normalize("NFC", value).split())
    visible = _INVISIBLE.sub("", unicodedata.normalize("NFKC", name))
    if not visible.strip():
        raise ValidationError(missing, code="required")
    if len(name) > max_length:
        raise ValidationError(f"Use at most {max_length} characters.", code="max_length")
    if _stacked_marks(name) > _MAX_STACKED_MARKS:
        raise ValidationError("Names can't stack that many accents on one letter.", code="marks")
    # Marks read as absent too: IDNA keeps a mark before a dot ("help\u0332.com" is a domain one
    # can register), which the pattern's letter-before-the-dot would not see.
    if _LINK_LIKE.search(_without_marks(visible)) or "@" in name:
        raise ValidationError("Names can't contain web or email addresses.", code="link")
    return name


def _without_marks(text: str) -> str:
    return "".join(ch for ch in text if not unicodedata.category(ch).startswith("M"))


def _stacked_marks(name: str) -> int:
    longest = run = 0
    for ch in name:
        run = run + 1 if unicodedata.category(ch).startswith("M") else 0
        longest = max(longest, run)
    return longest


PASSKEY_NAME_MAX_LENGTH = 64


def normalize_passkey_name(value: str) -> str:
    return normalize_full_name(value, max_length=PASSKEY_NAME_MAX_LENGTH, missing="Give the passkey a name.")


@deconstructible
class FullNameValidator:
    def __call__(self, value: str) -> None:
        normalize_full_name(value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FullNameValidator)

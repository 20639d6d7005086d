"""What can go wrong in the users app's use cases, one class each (after ``dramatiq/errors.py``)."""


class DeliveryError(Exception):
    """Base class for the permanent outcomes of sending one email (the actor skips retries)."""


class EmailGone(DeliveryError):
    """The email (or what it is about, or its user) no longer exists."""


class EmailNotWanted(DeliveryError):
    """Sending it would be wrong now: a newer link replaced it, the address changed, or the
    address was verified already."""


class EmailSuppressed(DeliveryError):
    """Its address is suppressed (the provider reported a bounce or a complaint): not sent, and
    recorded so, until staff lift the suppression."""


class EmailExpired(DeliveryError):
    """The email's link would already be dead; mailing it would only confuse."""


class PermanentSendError(DeliveryError):
    """The SMTP server refused this email for good (5xx about the recipient or the message)."""


class EmailBusy(Exception):
    """Another delivery holds a fresh claim on this email (the sweep covers it if that one dies)."""


class AddressRequestGone(Exception):
    """The reset or resend request a message names no longer exists (deleted, or never committed)."""


class InvalidLink(Exception):
    """A link's code is wrong, used, expired, replaced or not this row's. One error for all."""


class InvalidToken(Exception):
    """A token (refresh, password reset) that is malformed, not ours, expired, spent or revoked."""


class WrongPassword(Exception):
    """The current password given to confirm a change is not the account's."""


class LockedOut(Exception):
    """Too many failed log-ins of this account from this address: the pair is locked for now."""


class ProofMissing(Exception):
    """The user has a second factor and the request brought no proof of it (``code``)."""


class WrongProof(Exception):
    """A second-factor proof that is wrong, replayed or used: one error for all."""


class FactorStateError(Exception):
    """The factor change makes no sense now (TOTP already on, nothing pending, no factor at all);
    the message says which, for the user."""


class FeedbackFailed(RuntimeError):
    """Recording a mail provider's event failed on our side (the database, say): the webhook
    answers 500, so the provider sends the event again."""

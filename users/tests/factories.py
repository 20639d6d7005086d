import factory
from django.contrib.auth.hashers import make_password
from django.db import transaction

from users.models import OutboundEmail, User
from users.services import delivery, links


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    full_name = factory.Faker("name")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    # Hashed before the row is inserted: a password saved on an existing user is a password change
    # (User.save() revokes sessions and mails a notice), which creating a user is not.
    password = factory.LazyFunction(lambda: make_password("correct horse battery staple"))


def create_verification(user: User | None = None):
    """A user and a verification, through the service (in ``transaction=True`` tests its message
    is queued on commit, as in production; in plain ``django_db`` tests it is not)."""
    user = user or UserFactory()
    with transaction.atomic():
        links.verifications_supersede(user=user, reason="replaced by a newer link")
        return links.verification_insert(user=user, email=user.email)


def email_of(verification) -> OutboundEmail:
    """The delivery record of a verification link's email."""
    return OutboundEmail.objects.get(verification_id=verification.pk)


def create_notice(user: User | None = None, *, kind: str = OutboundEmail.Kind.ACCOUNT_EXISTS) -> OutboundEmail:
    """An email of a kind without a link, through the engine (queued on commit)."""
    user = user or UserFactory()
    with transaction.atomic():
        return delivery.email_queue(kind=kind, user=user, recipient=user.email)


def process_address_requests() -> int:
    """What the worker does with every recorded reset and resend request not yet processed (tests
    without a worker): look the address up, queue its email if one is owed. Returns how many."""
    from users.models import AddressRequest
    from users.services import address_requests

    ids = list(AddressRequest.objects.unprocessed().order_by("pk").values_list("pk", flat=True))
    return sum(address_requests.request_process(request_id=pk) for pk in ids)


def with_totp(user: User) -> str:
    """``user`` with TOTP on (as if set up and confirmed); the base32 secret, for pyotp."""
    import pyotp
    from django.utils import timezone

    from users.mfa import crypto
    from users.models import TotpDevice

    secret = pyotp.random_base32(length=32)
    TotpDevice.objects.create(user=user, secret=crypto.encrypt(secret), confirmed_at=timezone.now())
    return secret


def superuser_with_factor(*, username: str = "ops", password: str = "pw", **fields: object) -> User:  # noqa: S107
    """A superuser as ``MFA_REQUIRED_ROLES`` expects staff to be: with a second factor (TOTP), so
    the admin pages open (staff without one are sent to set one up first)."""
    fields.setdefault("email", f"{username}@example.com")
    fields.setdefault("full_name", username.title())
    user = User.objects.create_superuser(username=username, password=password, **fields)
    with_totp(user)
    return user

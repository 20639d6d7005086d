"""Staff in the admin: an address change goes through the customer's own flow; the role is set here."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from users.models import EmailVerification, OutboundEmail, User
from users.tests.factories import UserFactory, superuser_with_factor

pytestmark = pytest.mark.django_db


class _FormFields(HTMLParser):
    """The values a browser would submit from the admin's change form, as the page renders them."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in {"submit", "button"}:
            if a.get("type") in {"checkbox", "radio"}:
                if "checked" in a:
                    self.values[name] = a.get("value", "on")
            else:
                self.values[name] = a.get("value", "")
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and "selected" in a:
            self.values[self._select] = a.get("value", "")
        elif tag == "textarea" and name:
            self._textarea = name
            self.values[name] = ""

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        if tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.values[self._textarea] += data


def _change(client, user: User, **changes: str):
    url = f"/admin/users/user/{user.pk}/change/"
    fields = _FormFields()
    fields.feed(client.get(url).content.decode())
    return client.post(url, fields.values | changes)


@pytest.fixture
def staff(client):
    client.force_login(superuser_with_factor(username="ops"))
    return client


def test_staff_changing_an_address_makes_it_pending_and_mails_both(staff, django_capture_on_commit_callbacks):
    ada = UserFactory(username="ada", email="ada@example.com", is_email_verified=True)
    with django_capture_on_commit_callbacks() as callbacks:
        response = _change(staff, ada, email="ada@new.example.org")
    assert response.status_code == 302, response.content.decode()[:2000]
    ada.refresh_from_db()
    assert (ada.email, ada.pending_email, ada.is_email_verified) == ("ada@example.com", "ada@new.example.org", True)
    assert EmailVerification.objects.get(user=ada, purpose="change").email == "ada@new.example.org"
    kinds = sorted(OutboundEmail.objects.filter(user=ada).values_list("kind", flat=True))
    assert kinds == ["email_change", "email_change_notice"] and len(callbacks) == 2


def test_staff_set_the_role(staff):
    ada = UserFactory(username="ada", email="ada@example.com")
    assert _change(staff, ada, role="banker").status_code == 302
    assert User.objects.get(pk=ada.pk).role == "banker"


def test_staff_deactivating_an_account_still_tell_its_owner(staff):
    """A security notice goes out to an inactive account (staff ending a compromised account must
    not silence what its owner is owed); links to it do not."""
    from django.core import mail

    from users.services import delivery

    ada = UserFactory(username="ada", email="ada@example.com", is_email_verified=True)
    url = f"/admin/users/user/{ada.pk}/change/"
    fields = _FormFields()
    fields.feed(staff.get(url).content.decode())
    fields.values.pop("is_active")
    assert staff.post(url, fields.values).status_code == 302
    assert User.objects.get(pk=ada.pk).is_active is False
    [notice] = OutboundEmail.objects.filter(user=ada, kind="security_notice")
    assert delivery.deliver(email_id=notice.pk)[1]
    [message] = mail.outbox
    assert message.to == ["ada@example.com"] and "is_active" in message.body

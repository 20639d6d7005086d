"""The security-event trail: append-only in the database, and what it records about whom."""

import pytest
from django.db import IntegrityError, InternalError, transaction

from users.models import SecurityEvent, User
from users.services import events
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_an_event_cannot_be_changed_once_written():
    user = UserFactory()
    event = events.event_record(user=user, kind=SecurityEvent.Kind.PROFILE_CHANGED, detail="full_name")
    with pytest.raises((InternalError, IntegrityError)), transaction.atomic():
        SecurityEvent.objects.filter(pk=event.pk).update(detail="nothing happened")
    assert SecurityEvent.objects.get(pk=event.pk).detail == "full_name"


def test_deleting_the_acting_banker_keeps_the_event_and_its_label(rf):
    from users import context

    customer, banker = UserFactory(), UserFactory(username="bob", role=User.Role.BANKER)
    token = context.begin(client_ip="192.0.2.1", user_agent="ua", actor=banker)
    try:
        event = events.event_record(user=customer, kind=SecurityEvent.Kind.PROFILE_CHANGED, detail="email")
    finally:
        context.end(token)
    assert (event.actor, event.actor_user_id, event.client_ip) == ("banker:bob", banker.pk, "192.0.2.1")
    banker.delete()
    event.refresh_from_db()
    assert (event.actor, event.actor_user_id, event.detail) == ("banker:bob", None, "email")


def test_deleting_the_user_deletes_their_events():
    user = UserFactory()
    events.event_record(user=user, kind=SecurityEvent.Kind.LOGIN, actor=events.SELF)
    user.delete()
    assert not SecurityEvent.objects.exists()


def test_outside_a_request_the_actor_is_the_system():
    user = UserFactory()
    event = events.event_record(user=user, kind=SecurityEvent.Kind.PASSWORD_CHANGED)
    assert (event.actor, event.client_ip, event.user_agent) == ("system", None, "")

"""What the service keeps about log-ins, and for how long (a review of the data a bank with a
million users piles up): every log-in wrote rows nothing ever deleted, and every failed log-in with
an unknown name a user-less event, from anyone, 20 a minute per client address."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.utils import timezone

from tests.security.test_account_takeover import Api, Browser
from users.models import LoginSession, SecurityEvent
from users.services import retention

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_an_api_log_in_sets_no_cookie_and_leaves_no_browser_session(stack, ada):
    """django-axes' access log hashed a Django session's key, so it made one: each API log-in
    answered with a session cookie and left a session row and an access-log row behind for ever."""
    from axes.models import AccessLog

    answer = Api(stack).log_in("ada")
    assert answer.status_code == 200
    assert "Set-Cookie" not in answer.headers
    assert Session.objects.count() == 0 and AccessLog.objects.count() == 0
    assert LoginSession.objects.filter(user=ada).count() == 1  # the log-in is still on record, once


def test_the_hourly_purge_deletes_log_in_history_long_over_and_keeps_the_audit_trail(stack, ada):
    api = Api(stack)
    assert api.log_in("ada").status_code == 200
    assert Api(stack).log_in("nobody-here", "wrong guess").status_code == 401  # a user-less event
    assert Api(stack).log_in("ada", "wrong guess").status_code == 401  # ada's own event
    browser = Browser(stack)
    assert browser.log_in("ada").status_code == 302  # a browser session: a Django session too
    assert Session.objects.count() == 1
    kept_events = SecurityEvent.objects.filter(user=ada).count()
    assert SecurityEvent.objects.filter(user__isnull=True).count() == 1

    # Nothing is old enough yet.
    assert retention.history_purge() == {"sessions": 0, "anonymous_events": 0}
    assert api.call("GET", "/api/users/me/").status_code == 200

    # Past the ages: the sessions' tokens expired ENDED_SESSION_MAX_AGE ago, the anonymous event is
    # older than ANONYMOUS_EVENT_MAX_AGE; the account's own events stay (its audit trail).
    later = timezone.now() + timedelta(
        seconds=settings.REFRESH_TOKEN_LIFETIME + settings.ENDED_SESSION_MAX_AGE + settings.ANONYMOUS_EVENT_MAX_AGE + 60
    )
    Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))  # the engine's own expiry
    assert retention.history_purge(now=later) == {"sessions": 2, "anonymous_events": 1}
    assert LoginSession.objects.count() == 0 and Session.objects.count() == 0
    assert SecurityEvent.objects.filter(user=ada).count() == kept_events
    assert SecurityEvent.objects.filter(user__isnull=True).count() == 0


def test_the_purge_is_scheduled_hourly():
    """The scheduler (``manage.py crontab``) sends it once an hour, like the sign-up purge."""
    from dramatiq_crontab import scheduler

    import users.tasks  # noqa: F401  (registers the jobs)

    [job] = [j for j in scheduler.get_jobs() if j.func.__self__.actor_name == "purge_login_history"]
    assert str(job.trigger.fields[6]) == "37"  # minute 37 of every hour

"""What the security suites share: the running stack (live server, SMTP sink, worker; links point at
the live server) and Ada, a verified customer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from users.models import User
from users.tests.factories import UserFactory


@pytest.fixture
def stack(live_server, smtp_server, worker, settings, no_throttling) -> Iterator[str]:
    settings.SITE_URL = live_server.url
    yield live_server.url


@pytest.fixture
def ada() -> User:
    return UserFactory(username="ada", email="ada@example.com", full_name="Ada Lovelace", is_email_verified=True)

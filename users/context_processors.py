"""What every page's layout needs: the bank's name (``SITE_NAME``)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def site(request: HttpRequest) -> dict[str, str]:
    return {"bank_name": settings.SITE_NAME}

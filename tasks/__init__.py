"""Dramatiq actors and their plumbing.

``from tasks import send_verify_email`` works once Django is set up (the actor module imports
models, so it is loaded lazily; the worker loads it through django-dramatiq's discovery of
``tasks.tasks``).
"""

from typing import Any

__all__ = ["SkipRetry", "send_verify_email"]


def __getattr__(name: str) -> Any:
    if name == "send_verify_email":
        from tasks.tasks import send_verify_email

        return send_verify_email
    if name == "SkipRetry":
        from tasks.errors import SkipRetry

        return SkipRetry
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")

"""Worker plumbing: brokers, the retry policy, SkipRetry, queue metrics, dead letters. It knows
nothing of users.

``from tasks import send_verify_email`` (the contract's import) works once Django is set up: it
re-exports the actor the users app declares in ``users/tasks.py``, loaded lazily.
"""

from typing import Any

__all__ = ["SkipRetry", "send_verify_email"]


def __getattr__(name: str) -> Any:
    if name == "send_verify_email":
        from users.tasks import send_verify_email

        return send_verify_email
    if name == "SkipRetry":
        from tasks.errors import SkipRetry

        return SkipRetry
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")

"""Dramatiq middleware of the users app (listed in ``DRAMATIQ_BROKER`` in settings)."""

from __future__ import annotations

from typing import Any

from dramatiq import Middleware

from users import mail


class SmtpConnections(Middleware):
    """Each worker thread keeps its SMTP connection between emails; say QUIT when it stops."""

    def before_worker_thread_shutdown(self, broker: Any, thread: Any) -> None:
        mail.close()


class WarmUp(Middleware):
    """Render the emails once when a worker process boots, not on the first sign-up it serves."""

    def after_process_boot(self, broker: Any) -> None:
        from users.services import emails  # models: only once the app registry is ready

        emails.warm_up()

"""Each way we ship to stop the worker waits longer than the worker's own shutdown timeout.

Dramatiq lets the emails in flight finish for up to ``--worker-shutdown-timeout`` and only then
hands the prefetched messages and the scheduled retries back to Redis; an orchestrator's SIGKILL
before that leaves them unacked until the broker's heartbeat timeout. No processes here:
``tests/fault/test_stop_signals.py`` stops real workers.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import yaml
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
# A worker process notices the stop within 1 s; its consumers then need a few seconds to stop
# (one fetch or a Redis timeout) and to requeue.
MARGIN_S = 10


def _shutdown_timeout_s(command: list[str]) -> float:
    assert command[1:3] == ["manage.py", "rundramatiq"], command
    assert "--worker-shutdown-timeout" in command, "Dramatiq's default is 10 minutes: longer than any grace period"
    return int(command[command.index("--worker-shutdown-timeout") + 1]) / 1000


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert match and any(match.groups()), duration
    return int(match[1] or 0) * 60 + int(match[2] or 0)


def _unit(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ROOT / "deploy" / "systemd" / name)
    return parser["Service"]


def test_compose_waits_for_the_worker_to_shut_down():
    worker = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["worker"]
    assert _seconds(worker["stop_grace_period"]) >= _shutdown_timeout_s(worker["command"]) + MARGIN_S


def test_the_systemd_worker_unit_signals_the_main_process_and_waits_for_the_shutdown():
    service = _unit("simplebank-worker.service")
    assert service["KillMode"] == "mixed"
    assert service["KillSignal"] == "SIGTERM"
    command = service["ExecStart"].split()
    assert int(service["TimeoutStopSec"]) >= _shutdown_timeout_s(command) + MARGIN_S


def test_the_systemd_web_and_scheduler_units_signal_the_main_process():
    web = _unit("simplebank-web.service")
    command = web["ExecStart"].split()
    graceful_s = int(command[command.index("--graceful-timeout") + 1])
    assert int(web["TimeoutStopSec"]) > graceful_s
    assert web["KillMode"] == _unit("simplebank-scheduler.service")["KillMode"] == "mixed"

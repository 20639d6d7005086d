"""`python -m bench.levers [--reps N]`: what each lever buys, measured side by side.

Runs `python -m bench --quick --only PHASES` once per variant, round-robin over N repetitions (the
machine drifts; interleaving keeps that out of the comparison), and prints a Markdown table of
medians per lever and variant. Each variant changes one thing from the shipped defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# lever, phases, [(variant label, environment, extra bench arguments)], figures to show
LEVERS: list[tuple[str, str, list[tuple[str, dict[str, str], list[str]]], list[str]]] = [
    (
        "django-dramatiq task table (AdminMiddleware)",
        "noop,verify,enqueue",
        [("on", {"DRAMATIQ_TASK_ADMIN": "true"}, []), ("off (default)", {}, [])],
        ["noop_drain_per_s", "verify_drain_per_s", "enqueue_ms.p50"],
    ),
    (
        "waking idle workers on enqueue",
        "idle,load",
        [
            ("off, poll backs off to 1,000 ms", {"DRAMATIQ_REDIS_WAKEUP": "false"}, []),
            ("off, poll backs off to 20 ms", {"DRAMATIQ_REDIS_WAKEUP": "false", "dramatiq_worker_timeout": "20"}, []),
            ("on (default)", {}, []),
        ],
        ["idle_latency_ms.p50", "idle_latency_ms.p99", "load_latency_ms.p50", "load_latency_ms.p99"],
    ),
    (
        "SMTP connection per worker thread",
        "body,verify",
        [("new connection per email", {"EMAIL_CONNECTION_MAX_MESSAGES": "1"}, []), ("kept (default)", {}, [])],
        ["body_loop_per_s", "verify_drain_per_s"],
    ),
    (
        "database health check per message",
        "body,verify",
        [("off", {"DATABASE_CONN_HEALTH_CHECKS": "false"}, []), ("on (default)", {}, [])],
        ["body_loop_per_s", "verify_drain_per_s"],
    ),
    (
        "threads per worker process (2 processes)",
        "verify",
        [("4", {}, ["--threads", "4"]), ("8 (default)", {}, []), ("16", {}, ["--threads", "16"])],
        ["verify_drain_per_s"],
    ),
]


def figure(results: dict, path: str) -> float:
    value: object = results
    for key in path.split("."):
        value = value[key]  # type: ignore[index]
    return float(value)  # type: ignore[arg-type]


def run(phases: str, env: dict[str, str], extra: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", phases, *extra],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out[out.index("\n{") + 1 :])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.levers")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--lever", type=int, action="append", help="only these levers (1-based)")
    args = parser.parse_args()
    print("| lever | variant | " + "figure (median of runs) |", flush=True)
    print("|---|---|---|")
    for number, (lever, phases, variants, figures) in enumerate(LEVERS, 1):
        if args.lever and number not in args.lever:
            continue
        seen: dict[str, list[dict]] = {label: [] for label, _, _ in variants}
        for _ in range(args.reps):
            for label, env, extra in variants:
                seen[label].append(run(phases, env, extra))
        for label, _, _ in variants:
            cells = []
            for name in figures:
                values = [figure(r, name) for r in seen[label]]
                runs = ", ".join(f"{v:g}" for v in values)
                cells.append(f"{name} **{statistics.median(values):g}** ({runs})")
            print(f"| {lever} | {label} | {'; '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()

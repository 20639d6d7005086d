"""`python -m bench reset_timing [--n 200]`: does the answer's timing tell a known address from an unknown one?

POSTs ``--n`` password resets and ``--n`` verification resends for addresses nobody has, and as
many for addresses that have an account (each address once, so no cooldown cuts the work short:
verified customers for the reset, unverified ones for the resend), alternating unknown and known,
through Django's test client against a PostgreSQL database of its own
(BENCH_TIMING_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/simplebank_reset_timing,
created and emptied) and a private redis-server (the enqueue is real; no worker runs). Prints the
median and p90 of each in ms. Figures, not pass/fail: run it more than once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

FLOWS = {
    "password reset": ("/api/password-reset/", True),  # (path, the known customers are verified)
    "verification resend": ("/api/users/resend-verification/", False),
}


def log(message: str) -> None:
    print(f"[reset_timing {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _customers(n: int) -> None:
    """``n`` verified and ``n`` unverified customers (bulk SQL; their passwords are never used)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO users_user (password, is_superuser, username, full_name, email, is_email_verified,
                                    pending_email, password_changed_at, created_at, is_active, is_staff, role)
            SELECT '!', false, 'timing' || i, 'Timing Customer ' || i, 'known' || i || '@timing-bench.com',
                   i %% 2 = 0, '', now(), now(), true, false, 'depositor'
            FROM generate_series(1, %s) AS i
            """,
            [2 * n],
        )
        cursor.execute("ANALYZE")


def _stats(samples: list[float]) -> tuple[float, float]:
    return round(statistics.median(samples), 2), round(statistics.quantiles(samples, n=10)[8], 2)


def measure(n: int) -> dict[str, dict[str, tuple[float, float]]]:
    from rest_framework.test import APIClient

    client = APIClient(SERVER_NAME="localhost")

    def post(path: str, address: str) -> float:
        start = time.perf_counter()
        response = client.post(path, {"email": address}, format="json")
        elapsed = (time.perf_counter() - start) * 1000
        assert response.status_code == 202, (path, response.status_code, response.content)
        return elapsed

    for i in range(10):  # warm: the URL resolver, the serializers, the connections
        for path, _ in FLOWS.values():
            post(path, f"warm{i}@timing-bench.com")
    results = {}
    for flow, (path, verified) in FLOWS.items():
        known = [f"known{2 * i + (2 if verified else 1)}@timing-bench.com" for i in range(n)]
        unknown = [f"nobody{i}-{flow[0]}@timing-bench.com" for i in range(n)]
        samples: dict[str, list[float]] = {"unknown": [], "known": []}
        for i in range(n):  # alternate, first one then the other: the machine's drift hits both
            pair = [("unknown", unknown[i]), ("known", known[i])]
            for label, address in pair if i % 2 else reversed(pair):
                samples[label].append(post(path, address))
        results[flow] = {label: _stats(values) for label, values in samples.items()}
    return results


def table(results: dict[str, dict[str, tuple[float, float]]], n: int) -> str:
    lines = [
        f"| flow ({n} requests each) | unknown: median / p90 (ms) | known: median / p90 (ms) | known − unknown (median) |",
        "|---|---|---|---|",
    ]
    for flow, figures in results.items():
        (um, up), (km, kp) = figures["unknown"], figures["known"]
        lines.append(f"| {flow} | {um} / {up} | {km} / {kp} | {km - um:+.2f} ms |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench reset_timing")
    parser.add_argument("--n", type=int, default=200, help="requests per flow and kind of address (default 200)")
    args = parser.parse_args(argv)
    from bench.stack import UNLIMITED, measured_on, private_stack

    database_url = os.environ.get(
        "BENCH_TIMING_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/simplebank_reset_timing"
    )
    limits = ("RESEND", "RESEND_ADDRESS", "PASSWORD_RESET", "PASSWORD_RESET_ADDRESS")
    with private_stack("reset-timing", database_url, **{f"THROTTLE_{name}": UNLIMITED for name in limits}):
        _customers(args.n)
        log(f"measuring {args.n} requests per flow and kind of address")
        results = measure(args.n)
        log(measured_on())
        print("\n" + table(results, args.n) + "\n")

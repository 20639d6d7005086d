"""`python -m bench login_rate [--n 40]`: what a log-in costs with a password alone and with TOTP.

Logs ``--n`` customers in through the API with the production hashers (Argon2), one request at a
time through Django's test client, against a PostgreSQL database of its own
(BENCH_LOGIN_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/simplebank_login_rate, created
and emptied) and a private redis-server: ``--n`` customers without a factor (``POST /api/tokens/``),
and ``--n`` with TOTP (``POST /api/tokens/`` answering ``mfa_required``, then ``POST
/api/tokens/mfa/`` with a real code from pyotp). Prints the median and p90 of each step in ms and the
log-ins per second one process serves. Figures, not pass/fail: run it more than once.
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
PASSWORD = "correct horse battery staple"


def log(message: str) -> None:
    print(f"[login_rate {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _customers(n: int) -> list[str]:
    """``n`` customers without a factor and ``n`` with TOTP (one Argon2 hash, shared); their secrets."""
    from django.contrib.auth.hashers import make_password

    from users.models import User
    from users.tests.factories import with_totp

    hashed = make_password(PASSWORD)
    users = User.objects.bulk_create(
        User(
            username=f"login{i}",
            email=f"login{i}@login-bench.com",
            full_name="Login Customer",
            password=hashed,
            is_email_verified=True,
        )
        for i in range(2 * n)
    )
    return [with_totp(user) for user in users[n:]]


def _stats(samples: list[float]) -> tuple[float, float]:
    return round(statistics.median(samples), 2), round(statistics.quantiles(samples, n=10)[8], 2)


def measure(n: int, secrets: list[str]) -> dict[str, list[float]]:
    import pyotp
    from rest_framework.test import APIClient

    client = APIClient(SERVER_NAME="localhost")

    def post(path: str, body: dict, expected: int) -> tuple[float, dict]:
        start = time.perf_counter()
        response = client.post(path, body, format="json")
        elapsed = (time.perf_counter() - start) * 1000
        assert response.status_code == expected, (path, response.status_code, response.content)
        return elapsed, response.json()

    samples: dict[str, list[float]] = {"password only": [], "TOTP: password step": [], "TOTP: code step": []}
    for i in range(n):  # alternate the two kinds: the machine's drift hits both
        ms, _ = post("/api/tokens/", {"username": f"login{i}", "password": PASSWORD}, 200)
        samples["password only"].append(ms)
        ms, body = post("/api/tokens/", {"username": f"login{n + i}", "password": PASSWORD}, 401)
        samples["TOTP: password step"].append(ms)
        code = pyotp.TOTP(secrets[i]).now()
        ms, _ = post("/api/tokens/mfa/", {"mfa_token": body["mfa_token"], "code": code}, 200)
        samples["TOTP: code step"].append(ms)
    return samples


def table(samples: dict[str, list[float]], n: int) -> str:
    both = [a + b for a, b in zip(samples["TOTP: password step"], samples["TOTP: code step"], strict=True)]
    rows = {**samples, "TOTP: both steps": both}
    lines = [f"| API log-in ({n} each, one at a time) | median / p90 (ms) | log-ins/s (one process) |", "|---|---|---|"]
    for name, values in rows.items():
        median, p90 = _stats(values)
        rate = f"{1000 / median:.1f}" if name in ("password only", "TOTP: both steps") else "—"
        lines.append(f"| {name} | {median} / {p90} | {rate} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench login_rate")
    parser.add_argument("--n", type=int, default=40, help="log-ins of each kind (default 40)")
    args = parser.parse_args(argv)
    from bench.stack import UNLIMITED, measured_on, private_stack

    database_url = os.environ.get(
        "BENCH_LOGIN_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/simplebank_login_rate"
    )
    with private_stack("login-rate", database_url, THROTTLE_LOGIN=UNLIMITED, MFA_REQUIRED_ROLES="none"):
        secrets = _customers(args.n)
        log(f"measuring {args.n} log-ins of each kind (Argon2)")
        samples = measure(args.n, secrets)
        log(measured_on())
        print("\n" + table(samples, args.n) + "\n")

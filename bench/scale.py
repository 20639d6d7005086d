"""`python -m bench scale [--users N] [--steps A,B,C] [--repeat 5] [--update-docs]`: a million customers.

Loads customers into a PostgreSQL database of its own (BENCH_SCALE_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/simplebank_scale, created and emptied) with bulk SQL — two years
of sign-ups, 70 % verified, one verification email per user plus a resend for every fifth (1.2
verification emails per user); of the unverified, 1 % have a fresh unsent email and 1 % a failed
one (3,000 each at a million) — and, at each step (10k, 100k and
N rows by default), times what an operator and a Prometheus scrape do, median of --repeat runs:
a sign-up through the API (Argon2, as in production; compared with the same on the empty
database), the admin's user list, page 2000 of it, a search by exact address, the "verification
email: failed" filter (and with "unverified"), the operator scrape, the email list filtered by
failed, one user's page, /readyz and one sweep pass with 700 emails due. Prints each figure beside
its goal and writes the JSON and a plot (time vs rows) to bench-results/; --update-docs also
appends the table to docs/performance.md and redraws docs/scale.png. Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench-results"
PY = sys.executable
TOKEN = "scale-bench-metrics-token-0123456789"

# name: (what, goal in ms or a ratio, how to read the goal)
GOALS: dict[str, tuple[str, float, str]] = {
    "signup": ("POST /api/users/ (vs the empty database)", 1.2, "ratio"),
    "user_list": ("admin user list", 150, "ms"),
    "user_list_page_2000": ("admin user list, page 2000", 300, "ms"),
    "search_exact_address": ("admin search by exact address", 50, "ms"),
    "filter_failed": ("admin filter 'verification email: failed'", 100, "ms"),
    "filter_failed_unverified": ("the same filter + unverified", 100, "ms"),
    "operator_scrape": ("/metrics/operator scrape", 50, "ms"),
    "emails_failed": ("email list filtered by failed", 100, "ms"),
    "user_page": ("one user's page", 86, "ms (keep)"),
    "readyz": ("/readyz", 6, "ms (keep)"),
    "sweep_700": ("one sweep pass, 700 due", 930, "ms (keep)"),
}


def log(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", flush=True)


def load(first: int, last: int, total: int) -> None:
    """Customers ``first``..``last`` (1-based) of ``total``, their links and their emails."""
    from django.db import connection

    with connection.cursor() as cursor:
        # The trigger that keeps users' verification_state (migration 0007) would update a user per
        # email loaded; it is off for this session and the column is set in bulk below.
        cursor.execute("SET session_replication_role = replica")
        cursor.execute(
            """
            WITH added AS (
                INSERT INTO users_user (password, is_superuser, username, full_name, email, is_email_verified,
                                        pending_email, password_changed_at, created_at, is_active, is_staff, role)
                SELECT '!', false, 'customer' || i, 'Customer Number ' || i, 'customer' || i || '@scale-bench.com',
                       (i %% 10) < 7, '', ts, ts, true, false, 'depositor'
                FROM (SELECT i, now() - interval '730 days' + i * (interval '730 days' / %s) AS ts
                      FROM generate_series(%s, %s) AS i) AS s
                RETURNING id
            )
            SELECT min(id), max(id) FROM added
            """,
            [total, first, last],
        )
        first, last = cursor.fetchone()  # the rows below are these users' (by id)
        # Every fifth customer asked for a second link: the first one was superseded.
        cursor.execute(
            """
            INSERT INTO users_emailverification (user_id, email, purpose, nonce, state, created_at, expires_at, verified_at)
            SELECT u.id, u.email, 'signup', md5(u.id::text || 'old'), 'superseded', u.created_at - interval '1 hour',
                   u.created_at + interval '23 hours', NULL
            FROM users_user u WHERE u.id BETWEEN %s AND %s AND u.id %% 5 = 0
            """,
            [first, last],
        )
        cursor.execute(
            """
            INSERT INTO users_emailverification (user_id, email, purpose, nonce, state, created_at, expires_at, verified_at)
            SELECT u.id, u.email, 'signup', md5(u.id::text), CASE WHEN u.is_email_verified THEN 'verified' ELSE 'active' END,
                   u.created_at, u.created_at + interval '1 day',
                   CASE WHEN u.is_email_verified THEN u.created_at + interval '1 hour' END
            FROM users_user u WHERE u.id BETWEEN %s AND %s
            """,
            [first, last],
        )
        # One email per link: superseded with its link, else sent — but a few thousand of the
        # unverified are still unsent or failed.
        cursor.execute(
            """
            INSERT INTO users_outboundemail (kind, user_id, verification_id, recipient, state, attempts, last_error,
                                             created_at, expires_at, dispatched_at, claimed_at, sent_at)
            SELECT 'verification', v.user_id, v.id, v.email,
                   CASE WHEN v.state = 'superseded' THEN 'superseded'
                        WHEN v.state = 'active' AND (v.user_id / 10) %% 100 = 3 THEN 'failed'
                        WHEN v.state = 'active' AND (v.user_id / 10) %% 100 = 5 THEN 'pending'
                        ELSE 'sent' END,
                   1, CASE WHEN v.state = 'active' AND (v.user_id / 10) %% 100 = 3 THEN '550 5.1.1 no such user' ELSE '' END,
                   v.created_at, v.expires_at, v.created_at, v.created_at, v.created_at + interval '2 seconds'
            FROM users_emailverification v WHERE v.user_id BETWEEN %s AND %s
            """,
            [first, last],
        )
        # The unsent ones are fresh (an older one would have been failed by the sweep long ago).
        cursor.execute(
            "UPDATE users_outboundemail SET sent_at = NULL, claimed_at = NULL, attempts = 0, dispatched_at = now(), "
            "expires_at = now() + interval '1 day' WHERE state = 'pending' AND user_id BETWEEN %s AND %s",
            [first, last],
        )
        cursor.execute(
            "UPDATE users_outboundemail SET sent_at = NULL WHERE state = 'failed' AND user_id BETWEEN %s AND %s",
            [first, last],
        )
        cursor.execute(_latest_state_backfill())  # the migration's own (rows already set are skipped)
        cursor.execute("SET session_replication_role = DEFAULT")
    _vacuum()


def _latest_state_backfill() -> str:
    import importlib

    return importlib.import_module("users.migrations.0007_latest_verification_state").BACKFILL_POSTGRESQL


def _vacuum() -> None:
    import psycopg2
    from django.db import connection

    settings_dict = connection.settings_dict
    raw = psycopg2.connect(
        host=settings_dict["HOST"] or "127.0.0.1",
        port=settings_dict["PORT"] or 5432,
        user=settings_dict["USER"],
        password=settings_dict["PASSWORD"],
        dbname=settings_dict["NAME"],
    )
    raw.autocommit = True
    with raw.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    raw.close()


def timed(action: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(samples), 1)


class Measure:
    def __init__(self, repeat: int) -> None:
        from django.test import Client
        from rest_framework.test import APIClient

        from users.models import User
        from users.tests.factories import with_totp

        self.repeat = repeat
        self.api = APIClient(SERVER_NAME="localhost")
        self.staff = Client(SERVER_NAME="localhost")
        admin, _ = User.objects.get_or_create(
            username="scale-ops",
            defaults={"email": "ops@scale-bench.com", "full_name": "Ops", "is_staff": True, "is_superuser": True},
        )
        with_totp(admin)  # staff must have a second factor before any admin page, as in production
        self.staff.force_login(admin)
        self.signups = 0

    def _get(self, client, url: str, **headers: str) -> None:
        response = client.get(url, **headers)
        assert response.status_code == 200, (url, response.status_code)

    def signup(self) -> float:
        def one() -> None:
            self.signups += 1
            n = f"{self.signups}x{time.monotonic_ns()}"
            body = {"username": f"new{n}", "full_name": "New Customer", "email": f"new{n}@scale-bench.com"}
            response = self.api.post("/api/users/", body | {"password": "correct horse battery staple"}, format="json")
            assert response.status_code == 201, response.content

        one()  # warm: the first request of a process builds its URL resolver and the templates
        return timed(one, self.repeat)

    def all(self, rows: int) -> dict[str, float | None]:
        from django.db import connection
        from django.utils import timezone

        from users.metrics import email_stats_refresh
        from users.models import OutboundEmail, User
        from users.services import delivery

        email_stats_refresh()  # the scheduler's snapshot, as in production
        some = User.objects.filter(username=f"customer{max(1, rows // 2)}").values_list("pk", "email").first()
        assert some, rows
        pk, address = some
        figures: dict[str, float | None] = {"signup": self.signup()}
        pages = {
            "user_list": "/admin/users/user/",
            "user_list_page_2000": "/admin/users/user/?p=2000" if rows >= 200_000 else None,
            "search_exact_address": f"/admin/users/user/?q={address.upper()}",
            "filter_failed": "/admin/users/user/?verification_state=failed",
            "filter_failed_unverified": "/admin/users/user/?verification_state=failed&is_email_verified__exact=0",
            "emails_failed": "/admin/users/outboundemail/?state__exact=failed",
            "user_page": f"/admin/users/user/{pk}/change/",
        }
        for name, url in pages.items():
            figures[name] = timed(lambda url=url: self._get(self.staff, url), self.repeat) if url else None
        figures["operator_scrape"] = timed(
            lambda: self._get(self.staff, "/metrics/operator", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"), self.repeat
        )
        figures["readyz"] = timed(lambda: self._get(self.staff, "/readyz"), self.repeat)

        def due_700() -> list[int]:
            now = timezone.now()
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE users_outboundemail SET state = 'pending', attempts = 0, dispatched_at = %s, "
                    "expires_at = %s WHERE id IN (SELECT id FROM users_outboundemail WHERE state = 'sent' "
                    "ORDER BY id LIMIT 700) RETURNING id",
                    [now - timezone.timedelta(hours=1), now + timezone.timedelta(hours=1)],
                )
                return [row[0] for row in cursor.fetchall()]

        samples = []
        for _ in range(self.repeat):
            due = due_700()
            start = time.perf_counter()
            counts = delivery.redispatch_due()
            samples.append((time.perf_counter() - start) * 1000)
            assert counts["redispatched"] >= 700, counts
            OutboundEmail.objects.filter(pk__in=due).update(state="sent")  # as they were
        figures["sweep_700"] = round(statistics.median(samples), 1)
        return figures


def verdict(name: str, value: float | None, empty_signup: float) -> str:
    _what, goal, unit = GOALS[name]
    if value is None:
        return "n/a"
    if unit == "ratio":
        ratio = value / empty_signup
        return f"{value} ms ({ratio:.2f}× the empty database; goal ≤ {goal}×) {'ok' if ratio <= goal else 'OVER'}"
    return f"{value} ms (goal ≤ {goal:g}) {'ok' if value <= goal else 'OVER'}"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = results["steps"]
    rows = [step["rows"] for step in steps]
    figure, axes = plt.subplots(figsize=(7, 4))
    for name in ("signup", "search_exact_address", "filter_failed", "operator_scrape"):
        axes.plot(rows, [step["figures"][name] for step in steps], marker="o", label=GOALS[name][0])
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("customers in the database")
    axes.set_ylabel("median time (ms)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def table(results: dict) -> str:
    empty = results["empty_signup_ms"]
    last = results["steps"][-1]
    lines = [
        f"| action ({last['rows']:,} customers, {last['emails']:,} emails) | median of {results['repeat']} | goal |",
        "|---|---|---|",
    ]
    for name, (what, goal, unit) in GOALS.items():
        value = last["figures"][name]
        shown = "n/a" if value is None else f"{value:,} ms"
        if unit == "ratio":
            if value is not None:
                shown += f" ({value / empty:.2f}× {empty} ms on the empty database)"
            lines.append(f"| {what} | {shown} | ≤ {goal}× |")
        else:
            lines.append(f"| {what} | {shown} | ≤ {goal:g} {unit} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench scale")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--steps", default="10000,100000", help="smaller sizes measured on the way (comma separated)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args(argv)
    steps = sorted({*(int(s) for s in args.steps.split(",") if s and int(s) < args.users), args.users})

    RESULTS.mkdir(exist_ok=True)
    from bench.stack import UNLIMITED, private_stack

    database_url = os.environ.get("BENCH_SCALE_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/simplebank_scale")
    with private_stack("scale", database_url, METRICS_TOKEN=TOKEN, THROTTLE_SIGNUP=UNLIMITED):
        measure = Measure(args.repeat)
        log("the empty database: sign-ups")
        empty = measure.signup()
        results: dict = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "repeat": args.repeat,
            "empty_signup_ms": empty,
            "steps": [],
        }
        loaded = 0
        from users.models import OutboundEmail

        for target in steps:
            log(f"loading customers {loaded + 1:,}–{target:,}")
            start = time.perf_counter()
            load(loaded + 1, target, args.users)
            loaded = target
            log(f"    loaded in {time.perf_counter() - start:.0f} s; measuring")
            figures = measure.all(target)
            emails = OutboundEmail.objects.filter(kind="verification").count()
            results["steps"].append({"rows": target, "emails": emails, "figures": figures})
            for name, value in figures.items():
                log(f"    {GOALS[name][0]:<45} {verdict(name, value, empty)}")
        stamp = results["when"].replace(":", "").replace("-", "")
        out = RESULTS / f"scale-{stamp}.json"
        out.write_text(json.dumps(results, indent=2) + "\n")
        plot(results, RESULTS / f"scale-{stamp}.png")
        print("\n" + table(results) + "\n")
        log(f"wrote {out} and its plot")
        if args.update_docs:
            with (ROOT / "docs" / "performance.md").open("a") as docs:
                docs.write(f"\n## Scale run {results['when']} (`python -m bench scale`)\n\n{table(results)}\n")
            plot(results, ROOT / "docs" / "scale.png")
            log("updated docs/performance.md and docs/scale.png")


if __name__ == "__main__":
    main(sys.argv[1:])

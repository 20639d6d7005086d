"""`python -m bench [--quick] [--json FILE] [--processes N] [--update-docs]`: the pipeline, measured.

Starts what it measures — a private redis-server, `rundramatiq` worker processes, gunicorn for the
API phases, an aiosmtpd sink that counts and timestamps every message — against the PostgreSQL at
BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/simplebank_bench, created if
missing), prints a table and writes the JSON, a Markdown row and the latency plot to
bench-results/ (ignored by git). Only with --update-docs does it append the row to
docs/performance.md and redraw docs/latency_cdf.png, so a run never dirties the checkout by itself.
Figures only, no pass/fail: the machine is noisy, run it more than once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Everything a run writes (logs, JSON, the row, the plot) goes here; git ignores it.
RESULTS = ROOT / "bench-results"
PY = sys.executable


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99)}


# --- The SMTP sink ----------------------------------------------------------------------------------
def insert_row(text: str, row: str) -> str:
    """``text`` with ``row`` added as the last row of its runs table (the first table whose header
    starts ``| when (UTC) |`` under the ``## Runs`` heading), wherever that section is on the page:
    other sections may follow it (``bench scale --update-docs`` appends its own)."""
    lines = text.splitlines(keepends=True)
    runs = next((n for n, line in enumerate(lines) if line.startswith("## Runs")), 0)
    at = next((n for n, line in enumerate(lines) if n > runs and line.startswith("| when (UTC) |")), None)
    if at is None:
        return text + row
    while at + 1 < len(lines) and lines[at + 1].startswith("|"):
        at += 1
    if not lines[at].endswith("\n"):
        lines[at] += "\n"
    return "".join(lines[: at + 1]) + row + "".join(lines[at + 1 :])


class Sink:
    """What the sink process (bench/sink.py) appended to its file: arrival times by recipient."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.write_text("")
        self.lock = threading.Lock()
        self.offset = 0
        self.total = 0
        self.arrivals: dict[str, list[float]] = {}

    def _read(self) -> None:
        with self.lock, self.path.open("rb") as source:
            source.seek(self.offset)
            data = source.read()
            complete = data.rfind(b"\n") + 1
            self.offset += complete
            for line in data[:complete].splitlines():
                stamp, rcpt = line.decode().split(" ", 1)
                self.arrivals.setdefault(rcpt, []).append(float(stamp))
                self.total += 1

    def count(self) -> int:
        self._read()
        return self.total

    def snapshot(self) -> dict[str, list[float]]:
        self._read()
        with self.lock:
            return {rcpt: list(times) for rcpt, times in self.arrivals.items()}

    def reset(self) -> None:
        with self.lock:
            self.path.write_text("")  # the sink appends (O_APPEND), so it writes from 0 again
            self.offset = self.total = 0
            self.arrivals.clear()


# --- Processes ---------------------------------------------------------------------------------------
class Processes:
    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, args: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen:
        out = open(RESULTS / log_name, "ab")  # noqa: SIM115 - lives as long as the process
        process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen, timeout: float = 60) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def stop_all(self) -> None:
        for process in reversed(self.started):
            with contextlib.suppress(ProcessLookupError):
                self.stop(process, timeout=20)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def post_json(url: str, body: dict) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def hash_loop(seconds: float) -> int:
    from django.contrib.auth.hashers import Argon2PasswordHasher

    hasher, done, end = Argon2PasswordHasher(), 0, time.monotonic() + seconds
    while time.monotonic() < end:
        hasher.encode("correct horse battery staple", hasher.salt())
        done += 1
    return done


# --- The run -----------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.procs = Processes()
        self.results: dict = {}
        self.latencies: dict[str, list[float]] = {}

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, **extra}

    def setup(self) -> None:
        RESULTS.mkdir(exist_ok=True)
        redis_port = free_port()
        self.redis = self.procs.start(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            {**os.environ},
            "redis.log",
        )
        self.smtp_port = free_port()
        database_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/simplebank_bench")
        from bench.stack import UNLIMITED, environment

        limits = {f"THROTTLE_{name}": UNLIMITED for name in ("SIGNUP", "VERIFY", "LOGIN", "REFRESH")}
        smtp = {"EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend", "EMAIL_HOST": "127.0.0.1"}
        os.environ.update(
            environment(
                "bench",
                database_url,
                redis_port,
                DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
                EMAIL_PORT=str(self.smtp_port),
                **smtp,
                **limits,
            )
        )
        self._create_database(database_url)
        log("migrating the bench database")
        subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
        import django

        django.setup()
        self.sink = Sink(RESULTS / "sink.txt")
        self.procs.start([PY, "-m", "bench.sink", str(self.smtp_port), str(self.sink.path)], self.env(), "sink.log")
        wait_until(lambda: _accepts(self.smtp_port), 30, "the SMTP sink", interval=0.05)
        import dramatiq

        self.broker = dramatiq.get_broker()
        wait_until(lambda: self._redis_up(), 10, "redis")

    def _redis_up(self) -> bool:
        try:
            return bool(self.broker.client.ping())
        except Exception:
            return False

    @staticmethod
    def _create_database(url: str) -> None:
        from urllib.parse import urlsplit

        import psycopg2
        from psycopg2 import sql

        parts = urlsplit(url)
        name = parts.path.lstrip("/")
        connection = psycopg2.connect(
            host=parts.hostname,
            port=parts.port or 5432,
            user=parts.username,
            password=parts.password,
            dbname="postgres",
        )
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if not cursor.fetchone():
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        connection.close()

    def reset_data(self) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "TRUNCATE users_outboundemail, users_emailverification, users_loginsession, users_user, "
                "users_usernamereservation, axes_accessattempt, axes_accesslog, axes_accessfailurelog, "
                "django_dramatiq_task RESTART IDENTITY CASCADE"
            )
        self.broker.flush_all()
        self.broker.client.flushdb()
        self.sink.reset()

    def start_workers(self) -> subprocess.Popen:
        worker = self.procs.start(
            [
                PY,
                "manage.py",
                "rundramatiq",
                "--processes",
                str(self.args.processes),
                "--threads",
                str(self.args.threads),
            ],
            self.env(),
            "worker.log",
        )
        heartbeats = f"{self.broker.namespace}:__heartbeats__"
        wait_until(lambda: self.broker.client.zcard(heartbeats) >= self.args.processes, 60, "workers to boot")
        return worker

    def start_web(self, **extra: str) -> tuple[subprocess.Popen, str]:
        port = free_port()
        web = self.procs.start(
            [
                PY,
                "-m",
                "gunicorn",
                "bankproject.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(self.args.processes),
            ],
            self.env(**extra),
            "web.log",
        )
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(f"{url}/healthz"), 60, "gunicorn", interval=0.1)
        return web, url

    def pending_verifications(self, count: int) -> list[int]:
        """Users and pending verifications written straight to the database (no messages)."""
        from django.conf import settings
        from django.utils import timezone

        from users import tokens
        from users.models import EmailVerification, OutboundEmail, User

        now = timezone.now()
        expires = now + timezone.timedelta(seconds=settings.EMAIL_VERIFICATION_MAX_AGE)
        users = User.objects.bulk_create(
            [
                User(username=f"b{i}", full_name=f"Bench {i}", email=f"b{i}@bench.example.com", password="!")
                for i in range(count)
            ],
            batch_size=1000,
        )
        rows = EmailVerification.objects.bulk_create(
            [
                EmailVerification(
                    user=user, email=user.email, nonce=tokens.new_nonce(), created_at=now, expires_at=expires
                )
                for user in users
            ],
            batch_size=1000,
        )
        OutboundEmail.objects.bulk_create(
            [
                OutboundEmail(
                    kind="verification",
                    user_id=row.user_id,
                    verification=row,
                    recipient=row.email,
                    created_at=now,
                    dispatched_at=now,
                    expires_at=expires,
                )
                for row in rows
            ],
            batch_size=1000,
        )
        return [row.pk for row in rows]

    # 1 ---------------------------------------------------------------------------------------------
    def noop_drain(self) -> None:
        from bench.tasks import bench_noop

        count = 5_000 if self.quick else 20_000
        log(f"1/8 no-op drain: enqueueing {count} messages")
        self.reset_data()
        start = time.perf_counter()
        for _ in range(count):
            bench_noop.send()
        enqueue_rate = count / (time.perf_counter() - start)
        worker = self.start_workers()
        client = self.broker.client
        wait_until(lambda: int(client.get("bench:noop:count") or 0) >= count, 300, "the no-op drain", 0.05)
        elapsed = float(client.get("bench:noop:last")) - float(client.get("bench:noop:first"))
        self.procs.stop(worker)
        self.results["noop_drain_per_s"] = round(count / elapsed, 1)
        self.results["noop_enqueue_per_s"] = round(enqueue_rate, 1)
        log(f"    drained {self.results['noop_drain_per_s']}/s (enqueued {enqueue_rate:.0f}/s from one process)")

    # 2 ---------------------------------------------------------------------------------------------
    def body_loop(self) -> None:
        count = 1_000 if self.quick else 4_000
        log(f"2/8 body loop: {count} sends by {self.args.processes} processes, no queue")
        self.reset_data()
        ids = self.pending_verifications(count)
        start = time.perf_counter()
        loops = [
            self.procs.start([PY, "-m", "bench.body_loop", str(min(c)), str(max(c))], self.env(), "body.log")
            for c in self._ranges(ids)
        ]
        for loop in loops:
            loop.wait()
        elapsed = time.perf_counter() - start
        self.results["body_loop_per_s"] = round(self.sink.count() / elapsed, 1)
        log(f"    {self.results['body_loop_per_s']}/s ({self.sink.count()} emails)")

    def _ranges(self, ids: list[int]) -> list[list[int]]:
        size = -(-len(ids) // self.args.processes)
        return [ids[i : i + size] for i in range(0, len(ids), size)]

    # 3 ---------------------------------------------------------------------------------------------
    def verify_drain(self) -> None:
        from tasks import send_verify_email

        count = 2_000 if self.quick else 10_000
        log(f"3/8 verify drain: {count} verification emails through send_verify_email")
        self.reset_data()
        ids = self.pending_verifications(count)
        for verification_id in ids:
            send_verify_email.send(verification_id)
        worker = self.start_workers()
        wait_until(lambda: self.sink.count() >= count, 600, "the verify drain", 0.05)
        self.procs.stop(worker)
        arrivals = self.sink.snapshot()
        firsts = [t for times in arrivals.values() for t in times]
        duplicates = sum(len(times) - 1 for times in arrivals.values())
        received = len(arrivals)
        self.results["verify_drain_per_s"] = round(count / (max(firsts) - min(firsts)), 1)
        self.results |= {"emails_expected": count, "emails_received": received, "duplicates": duplicates}
        log(f"    {self.results['verify_drain_per_s']}/s; received {received}/{count}, duplicates {duplicates}")

    # 4, 5 ------------------------------------------------------------------------------------------
    def _signup(self, url: str, n: int) -> tuple[str, float]:
        """One API sign-up; returns its address and when the answer came (time.time())."""
        email = f"lat{n}-{time.monotonic_ns()}@bench.example.com"
        body = {"username": f"lat{n}x{time.monotonic_ns()}", "full_name": "L", "email": email}
        body["password"] = "correct horse battery staple"
        status = post_json(f"{url}/api/users/", body)
        answered = time.time()
        assert status == 201, status
        return email, answered

    def _latencies(self, answered: list[tuple[str, float]]) -> list[float]:
        """Answer → arrival per sign-up, once all emails are in (one that beat the answer: 0 ms)."""
        wait_until(lambda: self.sink.count() >= len(answered), 60, "the emails", 0.01)
        arrivals = self.sink.snapshot()
        return [max(0.0, (arrivals[email.lower()][0] - at) * 1000) for email, at in answered]

    def idle_latency(self) -> None:
        log("4/8 idle latency: 20 sign-ups, 1 s apart")
        self.reset_data()
        worker = self.start_workers()
        web, url = self.start_web()
        answered = []
        for n in range(20):
            answered.append(self._signup(url, n))
            time.sleep(1.0)  # the point of this phase: an idle system between sign-ups
        latencies = self._latencies(answered)
        self.procs.stop(web)
        self.procs.stop(worker)
        self.results["idle_latency_ms"] = percentiles(latencies)
        self.latencies["idle"] = latencies
        log(f"    {self.results['idle_latency_ms']}")

    def load_latency(self) -> None:
        rate, seconds = 100, (10 if self.quick else 20)
        log(f"5/8 load latency: {rate} sign-ups/s for {seconds} s (fast hasher)")
        self.reset_data()
        worker = self.start_workers()
        web, url = self.start_web(BENCH_FAST_HASHER="1")
        total = rate * seconds
        start = time.monotonic() + 0.5

        def one(n: int) -> tuple[str, float]:
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            return self._signup(url, n)

        with ThreadPoolExecutor(max_workers=32) as pool:
            answered = list(pool.map(one, range(total)))
        achieved = total / (time.monotonic() - start)
        latencies = self._latencies(answered)
        self.procs.stop(web)
        self.procs.stop(worker)
        self.results["load_latency_ms"] = {"rate_per_s": round(achieved, 1), **percentiles(latencies)}
        self.latencies["load"] = latencies
        log(f"    {self.results['load_latency_ms']}")

    # 6 ---------------------------------------------------------------------------------------------
    def enqueue_cost(self) -> None:
        from users import dispatch

        count = 1_000 if self.quick else 5_000
        log(f"6/8 enqueue cost: {count} dispatches as a sign-up's on_commit makes them")
        self.reset_data()
        ids = self.pending_verifications(count)
        timings = []
        for verification_id in ids:
            begin = time.perf_counter()
            dispatch.enqueue(dispatch.SEND_VERIFY_EMAIL, verification_id)
            timings.append((time.perf_counter() - begin) * 1000)
        p = percentiles(timings)
        self.results["enqueue_ms"] = {"p50": p["p50"], "p99": p["p99"]}
        log(f"    {self.results['enqueue_ms']}")

    # 7 ---------------------------------------------------------------------------------------------
    def signups_vs_hashing(self) -> None:
        seconds = 8 if self.quick else 20
        log(f"7/8 sign-ups/s with Argon2 on {self.args.processes} web processes vs hashing alone, {seconds} s each")
        self.reset_data()
        web, url = self.start_web()
        done, end = [0], time.monotonic() + seconds
        lock = threading.Lock()

        def client(k: int) -> None:
            n = 0
            while time.monotonic() < end:
                body = {"username": f"s{k}x{n}", "full_name": "S", "email": f"s{k}x{n}@bench.example.com"}
                body["password"] = "correct horse battery staple"
                if post_json(f"{url}/api/users/", body) == 201:
                    with lock:
                        done[0] += 1
                n += 1

        start = time.monotonic()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(self.args.processes * 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.results["signup_per_s"] = round(done[0] / (time.monotonic() - start), 2)
        self.procs.stop(web)
        with ProcessPoolExecutor(self.args.processes) as pool:
            start = time.monotonic()
            hashed = sum(pool.map(hash_loop, [seconds] * self.args.processes))
            self.results["hash_limit_per_s"] = round(hashed / (time.monotonic() - start), 2)
        log(f"    sign-ups {self.results['signup_per_s']}/s, hashing alone {self.results['hash_limit_per_s']}/s")

    # 8 ---------------------------------------------------------------------------------------------
    def tokens_vs_hashing(self) -> None:
        """Log-ins (one Argon2 check each) and refreshes (no hash: a signature, a locked row, a new
        pair) per second on the web processes, beside the hashing limit of phase 7."""
        from django.contrib.auth.hashers import make_password

        from users.models import User

        seconds = 8 if self.quick else 20
        clients = self.args.processes * 2
        log(f"8/8 log-ins and refreshes/s on {self.args.processes} web processes, {seconds} s each")
        self.reset_data()
        password = "correct horse battery staple"
        hashed = make_password(password)  # Argon2, as production; one hash shared by the rows
        User.objects.bulk_create(
            [
                User(
                    username=f"t{k}",
                    full_name="T",
                    email=f"t{k}@bench.example.com",
                    password=hashed,
                    is_email_verified=True,
                )
                for k in range(clients)
            ]
        )
        web, url = self.start_web()

        def post(path: str, body: dict) -> tuple[int, dict]:
            request = urllib.request.Request(
                f"{url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, {}

        def run(work) -> float:
            done, end, lock = [0], time.monotonic() + seconds, threading.Lock()

            def client(k: int) -> None:
                state: dict = {}
                while time.monotonic() < end:
                    if work(k, state):
                        with lock:
                            done[0] += 1

            start = time.monotonic()
            threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return round(done[0] / (time.monotonic() - start), 2)

        def login(k: int, state: dict) -> bool:
            status, body = post("/api/tokens/", {"username": f"t{k}", "password": password})
            state["refresh"] = body.get("refresh", state.get("refresh"))
            return status == 200

        def refresh(k: int, state: dict) -> bool:
            if "refresh" not in state:
                login(k, state)
            status, body = post("/api/tokens/refresh/", {"refresh": state["refresh"]})
            if status == 200:
                state["refresh"] = body["refresh"]  # rotation: the old one is spent
            else:
                state.pop("refresh", None)
            return status == 200

        self.results["login_per_s"] = run(login)
        self.results["refresh_per_s"] = run(refresh)
        self.procs.stop(web)
        log(f"    log-ins {self.results['login_per_s']}/s, refreshes {self.results['refresh_per_s']}/s")

    def latency_samples(self) -> dict[str, list[float]]:
        return {name: [round(v, 2) for v in values] for name, values in self.latencies.items()}

    # Report ----------------------------------------------------------------------------------------
    def report(self) -> None:
        import django
        import dramatiq

        r = self.results
        r["ratios"] = {
            "verify_drain_vs_body_loop": round(r["verify_drain_per_s"] / r["body_loop_per_s"], 2),
            "signup_vs_hash_limit": round(r["signup_per_s"] / r["hash_limit_per_s"], 2),
            "login_vs_hash_limit": round(r["login_per_s"] / r["hash_limit_per_s"], 2),
            "refresh_vs_hash_limit": round(r["refresh_per_s"] / r["hash_limit_per_s"], 2),
        }
        r["machine"] = {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "django": django.get_version(),
            "dramatiq": dramatiq.__version__,
        }
        r["settings"] = {
            "quick": self.quick,
            "worker_processes": self.args.processes,
            "worker_threads": self.args.threads,
            "task_admin": os.environ.get("DRAMATIQ_TASK_ADMIN", "false"),
            "redis_wakeup": os.environ.get("DRAMATIQ_REDIS_WAKEUP", "true"),
            "dramatiq_worker_timeout_ms": os.environ.get("dramatiq_worker_timeout", "1000"),  # noqa: SIM112
        }
        r["when"] = datetime.now(UTC).isoformat(timespec="seconds")
        r["latency_samples_ms"] = self.latency_samples()
        rows = [
            ("noop_drain_per_s", r["noop_drain_per_s"]),
            ("body_loop_per_s", r["body_loop_per_s"]),
            ("verify_drain_per_s", r["verify_drain_per_s"]),
            ("  vs body loop", r["ratios"]["verify_drain_vs_body_loop"]),
            ("emails expected/received/dup", f"{r['emails_expected']}/{r['emails_received']}/{r['duplicates']}"),
            ("idle_latency_ms p50/p95/p99", "/".join(str(v) for v in r["idle_latency_ms"].values())),
            (
                "load_latency_ms rate p50/p95/p99",
                f"{r['load_latency_ms']['rate_per_s']}/s "
                + "/".join(str(r["load_latency_ms"][k]) for k in ("p50", "p95", "p99")),
            ),
            ("enqueue_ms p50/p99", f"{r['enqueue_ms']['p50']}/{r['enqueue_ms']['p99']}"),
            ("signup_per_s / hash_limit_per_s", f"{r['signup_per_s']} / {r['hash_limit_per_s']}"),
            ("login_per_s / refresh_per_s", f"{r['login_per_s']} / {r['refresh_per_s']}"),
            ("  refresh vs hash limit", r["ratios"]["refresh_vs_hash_limit"]),
        ]
        width = max(len(name) for name, _ in rows)
        print()
        for name, value in rows:
            print(f"  {name:<{width}}  {value}")
        print()
        stamp = r["when"].replace(":", "").replace("-", "")
        out_json = Path(self.args.json) if self.args.json else RESULTS / f"bench-{stamp}.json"
        out_json.write_text(json.dumps(r, indent=2) + "\n")
        log(f"wrote {out_json}")
        row = RESULTS / f"bench-{stamp}.md"
        self._append_row(r, row)
        self._draw_cdf(RESULTS / f"latency_cdf-{stamp}.png")
        log(f"wrote {row} (the docs/performance.md row)")
        if self.args.update_docs:
            self._append_row(r, ROOT / "docs" / "performance.md")
            self._draw_cdf(ROOT / "docs" / "latency_cdf.png")
            log("updated docs/performance.md and docs/latency_cdf.png")

    def _append_row(self, r: dict, path: Path) -> None:
        if not path.exists():
            path.write_text(
                "# Performance runs\n\nOne row per `python -m bench --update-docs` run; see performance-summary.md.\n\n"
                "| when (UTC) | mode | task admin, wake-up, idle poll ms | noop drain/s | body loop/s | verify drain/s "
                "| ratio | idle p50/p99 ms "
                "| load rate/s p50/p99 ms | enqueue p50/p99 ms | sign-ups/s / hashing/s | received/dup |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
            )
        row = (
            f"| {r['when']} | {'quick' if self.quick else 'full'} | "
            f"{r['settings']['task_admin']}, {r['settings']['redis_wakeup']}, "
            f"{r['settings']['dramatiq_worker_timeout_ms']} | "
            f"{r['noop_drain_per_s']} | "
            f"{r['body_loop_per_s']} | {r['verify_drain_per_s']} | {r['ratios']['verify_drain_vs_body_loop']} | "
            f"{r['idle_latency_ms']['p50']}/{r['idle_latency_ms']['p99']} | "
            f"{r['load_latency_ms']['rate_per_s']} {r['load_latency_ms']['p50']}/{r['load_latency_ms']['p99']} | "
            f"{r['enqueue_ms']['p50']}/{r['enqueue_ms']['p99']} | {r['signup_per_s']} / {r['hash_limit_per_s']} "
            f"(log-ins {r['login_per_s']}, refreshes {r['refresh_per_s']}) | "
            f"{r['emails_received']}/{r['duplicates']} |\n"
        )
        path.write_text(insert_row(path.read_text(), row))

    def _draw_cdf(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(7, 4))
        for name, values in self.latencies.items():
            ordered = sorted(values)
            axes.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=name)
        axes.set_xscale("log")
        axes.set_xlabel("sign-up answered → email in the SMTP sink (ms)")
        axes.set_ylabel("fraction of emails")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)


def main() -> None:
    if sys.argv[1:2] == ["scale"]:  # `python -m bench scale …`: a million customers (bench/scale.py)
        from bench.scale import main as scale

        scale(sys.argv[2:])
        return
    if sys.argv[1:2] == ["reset_timing"]:  # `python -m bench reset_timing`: known vs unknown (bench/reset_timing.py)
        from bench.reset_timing import main as reset_timing

        reset_timing(sys.argv[2:])
        return
    if sys.argv[1:2] == ["login_rate"]:  # `python -m bench login_rate`: password alone vs TOTP (bench/login_rate.py)
        from bench.login_rate import main as login_rate

        login_rate(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller counts: under 3 minutes")
    parser.add_argument("--json", help="write the figures to this file (default: bench-results/bench-<when>.json)")
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help="also append the row to docs/performance.md and redraw docs/latency_cdf.png",
    )
    parser.add_argument("--processes", type=int, default=2, help="worker and web processes (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process (default 8)")
    parser.add_argument(
        "--only",
        help=f"comma-separated phases to run ({','.join(PHASES)}); prints their figures, records nothing",
    )
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(PHASES)
    if unknown := set(chosen) - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    bench = Bench(args)
    try:
        bench.setup()
        for name in PHASES:
            if name in chosen:
                getattr(bench, PHASES[name])()
        if args.only:
            print(json.dumps(bench.results | {"latency_samples_ms": bench.latency_samples()}, indent=2))
        else:
            bench.report()
    finally:
        bench.procs.stop_all()


PHASES = {
    "noop": "noop_drain",
    "body": "body_loop",
    "verify": "verify_drain",
    "idle": "idle_latency",
    "load": "load_latency",
    "enqueue": "enqueue_cost",
    "signup": "signups_vs_hashing",
    "tokens": "tokens_vs_hashing",
}


if __name__ == "__main__":
    main()

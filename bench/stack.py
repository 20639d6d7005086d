"""What the one-off benches (``scale``, ``login_rate``, ``reset_timing``) share: a private
redis-server and an emptied PostgreSQL database of their own, Django set up on them with the bench
settings (production hashers), and the line that says where a figure was measured."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNLIMITED = "100000000/min"


def environment(name: str, database_url: str, redis_port: int, **extra: str) -> dict[str, str]:
    """The settings of a bench run named ``name`` (its own queue namespace and secret key), with
    ``extra`` on top (rate limits lifted, another mail backend…)."""
    return {
        "DJANGO_SETTINGS_MODULE": "bench.settings",  # production hashers (no BENCH_FAST_HASHER)
        "DATABASE_URL": database_url,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "DRAMATIQ_NAMESPACE": name,
        "DJANGO_SECRET_KEY": f"not-a-secret-{name}-bench-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "DJANGO_DEBUG": "false",
        "DJANGO_HTTPS": "false",
        "DJANGO_ALLOWED_HOSTS": "localhost",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "DRAMATIQ_PROMETHEUS": "false",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def recreate_database(url: str) -> None:
    """Drop the database ``url`` names (if it exists) and create it empty."""
    from urllib.parse import urlsplit

    import psycopg2
    from psycopg2 import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    connection = psycopg2.connect(
        host=parts.hostname, port=parts.port or 5432, user=parts.username, password=parts.password, dbname="postgres"
    )
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    connection.close()


def pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@contextmanager
def private_stack(name: str, database_url: str, **extra: str) -> Iterator[int]:
    """A redis-server of this run's own (its port is yielded) and ``database_url`` emptied and
    migrated, with Django set up on them; the redis-server stops on the way out."""
    from bench.__main__ import free_port, wait_until

    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        os.environ.update(environment(name, database_url, redis_port, **extra))
        recreate_database(database_url)
        print(f"[{name} {time.strftime('%H:%M:%S')}] migrating {database_url}", flush=True)
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
        import django

        django.setup()
        import redis as redis_client

        wait_until(lambda: pings(redis_client.Redis(port=redis_port)), 10, "redis")
        yield redis_port
    finally:
        redis.terminate()
        redis.wait(timeout=10)


def measured_on() -> str:
    """Where a figure comes from: the commit, the machine, its cores."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return f"commit {commit.stdout.strip()}, {platform.node()}, {os.cpu_count()} cores"

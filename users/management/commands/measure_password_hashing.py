"""What one password hash costs on this machine, for the production hashers. Prints figures only;
run it a few times (the machine is noisy)."""

from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

from django.core.management.base import BaseCommand

from bankproject import settings as production


def one_hash(path: str) -> tuple[float, float]:
    hasher = _hasher(path)
    wall, cpu = time.perf_counter(), time.process_time()
    hasher.encode("correct horse battery staple", hasher.salt())
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def _hasher(path: str):
    from django.utils.module_loading import import_string

    return import_string(path)()


def per_second(path: str, processes: int, seconds: float = 3.0) -> float:
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(one_hash, [path] * processes))  # warm every process up
        start, done = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            list(pool.map(one_hash, [path] * processes * 2))
            done += processes * 2
    return done / (time.perf_counter() - start)


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--rounds", type=int, default=15)

    def handle(self, *args, rounds: int, **options):
        self.stdout.write(f"cores: {os.cpu_count()}")
        for path in production.PASSWORD_HASHERS[:2]:
            hasher = _hasher(path)
            if hasher.algorithm == "argon2":
                params = f"argon2id m={hasher.memory_cost} KiB t={hasher.time_cost} p={hasher.parallelism}"
            else:
                params = f"{hasher.algorithm} iterations={hasher.iterations}"
            samples = [one_hash(path) for _ in range(rounds)]
            wall = statistics.median(s[0] for s in samples)
            cpu = statistics.median(s[1] for s in samples)
            self.stdout.write(
                f"{params}: median {wall:.0f} ms wall, {cpu:.0f} ms CPU per hash; "
                f"{per_second(path, 1):.1f} hashes/s on 1 process, {per_second(path, 2):.1f}/s on 2"
            )

"""The actor's body without the queue: `python -m bench.body_loop FIRST_ID LAST_ID`.

Loads, renders, sends over SMTP and marks sent each verification in the range, in a plain loop,
and prints `sent=N seconds=S`.
"""

import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django

django.setup()

from users.services import delivery  # noqa: E402


def main() -> None:
    first, last = int(sys.argv[1]), int(sys.argv[2])
    start = time.perf_counter()
    sent = 0
    for verification_id in range(first, last + 1):
        _, sent_now = delivery.deliver(verification_id=verification_id)
        sent += sent_now
    print(f"sent={sent} seconds={time.perf_counter() - start:.3f}")


if __name__ == "__main__":
    main()

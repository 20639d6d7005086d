"""The benchmark's SMTP sink, in a process of its own: `python -m bench.sink PORT FILE`.

Appends one line per accepted message to FILE — arrival time (time.time()) and recipient — so
the benchmark can count and time emails without sharing a GIL with the sink (a sink thread in
the measuring process would stamp arrivals late whenever the load generator holds the GIL).
"""

import signal
import sys
import threading
import time

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, path: str) -> None:
        self.out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the life of the process
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        now = time.time()
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.out.write(f"{now:.6f} {rcpt.lower()}\n")
        return "250 OK"


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    controller = Controller(Handler(path), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()

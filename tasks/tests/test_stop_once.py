"""``StopOnce``: a repeat of the stop signal within the window is the same stop (no processes here;
``tests/fault/test_stop_signals.py`` signals real workers)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import dramatiq.cli
import pytest

from tasks.middleware import fold_duplicate_stops, is_dramatiq_termhandler


def _dramatiq_like_termhandler(calls: list[int]):
    """A stand-in with the name of the handler Dramatiq's worker processes install."""

    def termhandler(signum, frame):
        calls.append(signum)

    termhandler.__module__ = "dramatiq.cli"
    termhandler.__qualname__ = "worker_process.<locals>.termhandler"
    return termhandler


@pytest.fixture
def restore_handlers() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_dramatiq_still_names_its_worker_stop_handler_as_we_look_for_it():
    """Pinned: a Dramatiq upgrade that renames or moves the handler fails here first."""
    nested = [c for c in dramatiq.cli.worker_process.__code__.co_consts if hasattr(c, "co_qualname")]
    assert "worker_process.<locals>.termhandler" in [c.co_qualname for c in nested]
    termhandler = _dramatiq_like_termhandler([])
    assert is_dramatiq_termhandler(termhandler)
    assert not is_dramatiq_termhandler(signal.SIG_DFL) and not is_dramatiq_termhandler(print)


@pytest.mark.usefixtures("restore_handlers")
def test_a_repeat_within_the_window_is_folded_into_the_first_stop():
    calls: list[int] = []
    signal.signal(signal.SIGTERM, _dramatiq_like_termhandler(calls))
    signal.signal(signal.SIGHUP, _dramatiq_like_termhandler(calls))
    assert fold_duplicate_stops(window_s=3600) == [signal.SIGTERM, signal.SIGHUP]
    signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)  # type: ignore[operator]
    signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)  # type: ignore[operator]
    signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)  # type: ignore[operator]  # one window for both
    assert calls == [signal.SIGTERM]


@pytest.mark.usefixtures("restore_handlers")
def test_a_repeat_after_the_window_reaches_dramatiq_which_kills():
    calls: list[int] = []
    signal.signal(signal.SIGTERM, _dramatiq_like_termhandler(calls))
    assert fold_duplicate_stops(window_s=0) == [signal.SIGTERM]
    signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)  # type: ignore[operator]
    signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)  # type: ignore[operator]
    assert calls == [signal.SIGTERM, signal.SIGTERM]


@pytest.mark.usefixtures("restore_handlers")
def test_other_handlers_and_other_threads_are_left_alone():
    def ours(signum, frame):
        pass

    signal.signal(signal.SIGTERM, ours)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    assert fold_duplicate_stops() == []  # an in-process Worker in a test, the web process...
    assert signal.getsignal(signal.SIGTERM) is ours

    signal.signal(signal.SIGTERM, _dramatiq_like_termhandler([]))
    folded: list[object] = []
    thread = threading.Thread(target=lambda: folded.append(fold_duplicate_stops()))
    thread.start()
    thread.join()
    assert folded == [[]]  # signal handlers belong to the main thread

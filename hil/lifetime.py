"""How long the harness and its children live: children that cannot outlive it, even when it
is SIGKILLed, and signals that end it the orderly way.

A spawned broker or twin left behind holds ports and, for the twin, a virtual rig nobody
stops. On Linux the kernel can send the child SIGTERM when its parent dies (PR_SET_PDEATHSIG);
elsewhere this is a no-op and the harness's own teardown is all there is.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

PR_SET_PDEATHSIG = 1
# Loaded here, in the parent: the child between fork and exec must not take the loader's locks.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    """`preexec_fn` for Popen: SIGTERM this child when the thread that spawned it exits.

    The signal follows the spawning *thread*, so spawn from a thread that lives as long as the
    child should (the main thread, in the harness).
    """
    if _LIBC is None:
        return
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


UNWIND_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # a CI runner cancelling, a closed terminal


@contextlib.contextmanager
def signals_as_interrupt(
    signals: tuple[signal.Signals, ...] = UNWIND_SIGNALS,
) -> Iterator[list[signal.Signals]]:
    """While the block runs, `signals` unwind like Ctrl-C, so the rig is given back on them too.

    Each is handed to the SIGINT handler in force: asyncio.run's, which cancels the push so
    every `finally` runs, or Python's, which raises KeyboardInterrupt. Yields the signals
    received. A repeat is ignored: it would break the teardown it is waiting for. A signal
    already ignored (nohup) stays ignored; the previous handlers come back after the block.
    """
    received: list[signal.Signals] = []

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if received:
            return
        received.append(signal.Signals(signum))
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):  # SIGINT ignored or default: still unwind
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)

    previous = {}
    if threading.current_thread() is threading.main_thread():  # handlers live in main only
        for sig in signals:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, interrupt)
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def interrupted(received: list[signal.Signals], prog: str, left: str) -> int:
    """Say which signal stopped `prog` and in what state it left the rig; the shell's exit
    status for it (128 + the signal's number; Ctrl-C is SIGINT)."""
    sig = received[0] if received else signal.SIGINT
    print(f"{prog}: interrupted by {sig.name}; {left}", file=sys.stderr)
    return 128 + sig

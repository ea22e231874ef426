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


UNWIND_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def interrupts_unwind() -> Iterator[None]:
    """SIGTERM (a CI runner cancelling a job) and SIGHUP (a closed terminal) unwind like
    Ctrl-C while the block runs, so every `finally` gives the rig back: power on, ports closed,
    children stopped, temporary folders removed. Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in UNWIND_SIGNALS:
        handler = signal.getsignal(sig)
        if handler in (signal.SIG_DFL, None):  # a handler someone else set is theirs to keep
            previous[sig] = handler
            signal.signal(sig, signal.default_int_handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

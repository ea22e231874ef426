"""Child processes that cannot outlive the harness, even when it is SIGKILLed.

A spawned broker or twin left behind holds ports and, for the twin, a virtual rig nobody
stops. On Linux the kernel can send the child SIGTERM when its parent dies (PR_SET_PDEATHSIG);
elsewhere this is a no-op and the harness's own teardown is all there is.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

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

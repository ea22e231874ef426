"""One run per rig: a lock file per rig file, so two runs never drive the same relay and port.

The lock is an OS file lock (`filelock`), so it dies with its holder: a run killed with SIGKILL
leaves no lock behind, only a stale note. The note beside it (pid, start time, command) is what
a second run reports instead of waiting.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import sys
from datetime import datetime
from pathlib import Path

from filelock import FileLock, Timeout

COMMAND_CHARS = 120


class RigBusy(RuntimeError):
    """Another run holds the rig; the message says who, since when, and what to do."""


def lock_dir() -> Path:
    """`$HIL_LOCK_DIR`, else `$XDG_RUNTIME_DIR/hil`, else `/tmp/hil-locks` (shared by users)."""
    if os.environ.get("HIL_LOCK_DIR"):
        return Path(os.environ["HIL_LOCK_DIR"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "hil"
    return Path("/tmp/hil-locks")


class RigLock:
    """The lock of the rig described by `rig_path` (keyed by its resolved path)."""

    def __init__(self, rig_path: Path, name: str | None = None, directory: Path | None = None):
        self.rig_path = rig_path.resolve()
        self.name = name or self.rig_path.stem
        directory = directory or lock_dir()
        key = hashlib.sha256(str(self.rig_path).encode()).hexdigest()[:16]
        self.path = directory / f"{self.rig_path.stem}-{key}.lock"
        self.note_path = self.path.with_suffix(".json")
        self._lock = FileLock(str(self.path), timeout=0, thread_local=False)

    def acquire(self) -> None:
        """Take the lock now or raise RigBusy; never waits."""
        self._ensure_dir()
        try:
            self._lock.acquire()
        except Timeout:
            raise RigBusy(self._busy_message()) from None
        note = {
            "rig": str(self.rig_path),
            "pid": os.getpid(),
            "since": datetime.now().isoformat(timespec="seconds"),
            "user": _user(),
            "command": " ".join(sys.argv)[:COMMAND_CHARS],
        }
        self.note_path.write_text(json.dumps(note) + "\n")

    def release(self) -> None:
        if not self._lock.is_locked:
            return
        with contextlib.suppress(FileNotFoundError):
            self.note_path.unlink()
        self._lock.release()

    def _ensure_dir(self) -> None:
        directory = self.path.parent
        if directory.is_dir():
            return
        directory.mkdir(parents=True, exist_ok=True)
        if directory == Path("/tmp/hil-locks"):
            with contextlib.suppress(PermissionError):
                directory.chmod(0o1777)  # every user's runs meet at the same locks

    def _busy_message(self) -> str:
        try:
            note = json.loads(self.note_path.read_text())
            holder = (
                f"pid {note['pid']} since {note['since']} "
                f"(started by {note['user']}: {note['command']})"
            )
            if not _alive(note["pid"]):
                holder += ", which has exited: a process it started still holds the lock"
        except (OSError, ValueError, KeyError):
            holder = "another process (it has not written its note yet)"
        return (
            f"rig {self.name} ({self.rig_path}) is in use by {holder}; wait or stop it "
            f"(lock {self.path})"
        )

    def __enter__(self) -> RigLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True

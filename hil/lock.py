"""One run per rig: a lock file per rig file, so two runs never drive the same relay and port.

The lock is an `flock` on a file this module opens itself, so it dies with its holder: a run
killed with SIGKILL leaves no lock behind. The holder writes who it is (pid, start time, user,
command) into the lock file, which is what a second run reports instead of waiting; the note
beside it (`<name>.json`) is a copy for people and tools, and a stale one is simply replaced.

The folder is `$HIL_LOCK_DIR`, else `$XDG_RUNTIME_DIR/hil` (per user), else the shared
`/tmp/hil-locks` (created mode 1777). Another user may write in a shared folder, so nothing in it
is followed: lock and note are opened with `O_NOFOLLOW` (the note is replaced atomically, never
written through a link), and a folder that is neither root's nor ours, or world-writable without
the sticky bit, is refused. Lock files are mode 0666 so every user of a shared folder can take
them. Runs of several users meet only in a folder they share; an admin can make one, e.g.
`install -d -o root -g hil -m 3770 /srv/hil-locks` and `HIL_LOCK_DIR=/srv/hil-locks` for the
`hil` group (sticky, so no one removes another's files).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import getpass
import hashlib
import json
import logging
import os
import pwd
import stat
import sys
import tempfile
from datetime import datetime
from pathlib import Path

log = logging.getLogger(__name__)

COMMAND_CHARS = 120
NOTE_BYTES = 4096
LOCK_MODE = 0o666  # a shared folder's lock file must be usable by the next user too
NOTE_MODE = 0o644
SHARED_DIR = Path("/tmp/hil-locks")
OWN_FOLDER_FIX = "set HIL_LOCK_DIR to a folder you own (e.g. export HIL_LOCK_DIR=~/.hil-locks)"


class RigBusy(RuntimeError):
    """Another run holds the rig; the message says who, since when, and what to do."""


class LockRefused(RigBusy):
    """The lock cannot be used safely or at all; the message names the path and the fix.

    A RigBusy, so callers that report a rig they cannot have report this too.
    """


def lock_dir() -> Path:
    """`$HIL_LOCK_DIR`, else `$XDG_RUNTIME_DIR/hil`, else `/tmp/hil-locks` (shared by users)."""
    if os.environ.get("HIL_LOCK_DIR"):
        return Path(os.environ["HIL_LOCK_DIR"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "hil"
    return SHARED_DIR


class RigLock:
    """The lock of the rig described by `rig_path` (keyed by its resolved path)."""

    def __init__(self, rig_path: Path, name: str | None = None, directory: Path | None = None):
        self.rig_path = rig_path.resolve()
        self.name = name or self.rig_path.stem
        directory = directory or lock_dir()
        key = hashlib.sha256(str(self.rig_path).encode()).hexdigest()[:16]
        self.path = directory / f"{self.rig_path.stem}-{key}.lock"
        self.note_path = self.path.with_suffix(".json")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock now or raise RigBusy; never waits."""
        if self._fd is not None:
            return
        self._ensure_dir()
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            message = self._busy_message(fd)
            os.close(fd)
            raise RigBusy(message) from None
        note = {
            "rig": str(self.rig_path),
            "pid": os.getpid(),
            "since": datetime.now().isoformat(timespec="seconds"),
            "user": _user(),
            "command": " ".join(sys.argv)[:COMMAND_CHARS],
        }
        text = (json.dumps(note) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, text, 0)
        self._fd = fd
        try:
            self._write_note(text)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(FileNotFoundError, PermissionError):
            self.note_path.unlink()
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # drops the flock

    def _ensure_dir(self) -> None:
        """Make the folder if missing; refuse one where another user could plant links."""
        directory = self.path.parent
        if not directory.exists() and not directory.is_symlink():
            directory.mkdir(parents=True, exist_ok=True)
            if directory == SHARED_DIR:
                with contextlib.suppress(PermissionError):
                    directory.chmod(0o1777)  # every user's runs meet at the same locks
        _check_folder(directory)

    def _open(self) -> int:
        """The lock file's fd, opened without following links, mode 0666 whatever the umask."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, LOCK_MODE)
        except PermissionError:
            raise LockRefused(self._permission_message()) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LockRefused(
                    f"lock file {self.path} is a symbolic link, which hil never follows: "
                    f"remove it, or {OWN_FOLDER_FIX}"
                ) from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            raise LockRefused(
                f"lock file {self.path} is not a plain file (a device, pipe or hard link "
                f"someone planted?): remove it, or {OWN_FOLDER_FIX}"
            )
        if stat.S_IMODE(st.st_mode) != LOCK_MODE:
            with contextlib.suppress(PermissionError):  # only its owner (or root) may
                os.fchmod(fd, LOCK_MODE)
        return fd

    def _write_note(self, text: bytes) -> None:
        """Replace the note atomically: a link planted at its path is replaced, not followed."""
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.note_path.name}.")
            with os.fdopen(fd, "wb") as file:
                os.fchmod(file.fileno(), NOTE_MODE)
                file.write(text)
            os.replace(tmp, self.note_path)
            tmp = None
        except PermissionError as exc:  # e.g. another user's stale note in a sticky folder
            log.warning("no note %s (%s); the lock file names the holder", self.note_path, exc)
        finally:
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def _permission_message(self) -> str:
        if os.path.lexists(self.path):
            problem = f"lock file {self.path} belongs to {_owner(self.path)} and is not writable"
            fix = f"ask its owner or root to run `chmod 666 {self.path}`"
        else:
            problem = f"lock folder {self.path.parent} ({_owner(self.path.parent)}) is read-only"
            fix = f"ask its owner or root to run `chmod 1777 {self.path.parent}`"
        return f"rig {self.name} ({self.rig_path}): {problem} for you; {fix}, or {OWN_FOLDER_FIX}"

    def _busy_message(self, fd: int) -> str:
        try:
            note = json.loads(os.pread(fd, NOTE_BYTES, 0))
            holder = (
                f"pid {note['pid']} since {note['since']} "
                f"(started by {note['user']}: {note['command']})"
            )
            if not _alive(note["pid"]):
                holder += ", which has exited: a process it started still holds the lock"
        except (OSError, ValueError, KeyError, TypeError):
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


def _check_folder(directory: Path) -> None:
    """Refuse a folder (or a link to one) that a user other than root and us controls."""
    try:
        link, st = os.lstat(directory), os.stat(directory)
    except FileNotFoundError:
        raise LockRefused(
            f"lock folder {directory} is a link to nowhere: remove it, or {OWN_FOLDER_FIX}"
        ) from None
    trusted = {0, os.getuid()}
    if not stat.S_ISDIR(st.st_mode):
        problem = "is not a folder"
    elif link.st_uid not in trusted or st.st_uid not in trusted:
        owner = _owner(directory) if link.st_uid not in trusted else _owner(directory.resolve())
        problem = f"belongs to {owner}, not to root or you, so its owner could plant links in it"
    elif st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        problem = (
            "is writable by every user without the sticky bit, so anyone could replace its "
            f"files (its owner can fix that: `chmod +t {directory}`)"
        )
    else:
        return
    raise LockRefused(f"lock folder {directory} {problem}; {OWN_FOLDER_FIX}")


def _owner(path: Path) -> str:
    """Who owns `path` itself (a link, not its target), for messages."""
    try:
        uid = os.lstat(path).st_uid
    except OSError:
        return "an unknown user"
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


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

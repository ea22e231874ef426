"""Which run on this machine holds a place, so a killed run's place can be told from a live one's.

labgrid records only `host/user` as a place's holder, and a place stays acquired when its
client goes away (the coordinator's AcquirePlace keeps the name, not the session), so a run
SIGKILLed while holding a place leaves it acquired under the name every other run of the same
user on the same host shares. While a run holds a place it also holds a lock that dies with it:
hil's rig lock (an flock, see `hil.lock`) keyed by coordinator and place, taken just before the
place is acquired and dropped just after it is released, so no moment of holding the place goes
without it. The lock file keeps its holder's note after a SIGKILL; a free lock with a note
therefore marks a place left behind by a dead run, which the next run may release. A place held
under our name without a note was acquired some other way (`labgrid-client acquire` by hand)
and is left to its holder.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from hil.lab import LabError
from hil.lock import NOTE_BYTES, RigBusy, RigLock

HANDOVER_S = 5.0
POLL_S = 0.05


class PlaceHolder:
    """The lock of `place` on the coordinator at `coordinator`, in hil's lock folder."""

    def __init__(self, coordinator: str, place: str, directory: Path | None = None) -> None:
        self.place = place
        key = Path("/labgrid") / coordinator.replace("/", "_") / place.replace("/", "_")
        self._lock = RigLock(key, f"labgrid place {place}", directory)

    @property
    def path(self) -> Path:
        return self._lock.path

    def take(self, timeout: float = HANDOVER_S) -> None:
        """Note this run as the place's holder, just before acquiring the place it was given.

        The run before on this host releases the place before its note, so the note may still
        be there for a moment.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._lock.acquire()
                return
            except RigBusy as exc:
                if time.monotonic() >= deadline:
                    raise LabError(
                        f"place {self.place} was given to this run, but another run on this "
                        f"host still notes it as its own: {exc}"
                    ) from None
            time.sleep(POLL_S)

    def give_back(self) -> None:
        self._lock.release()

    def dead_holder(self) -> dict[str, Any] | None:
        """The note of a run on this host that held the place and died, or None: no run of
        this host held it, or the one that does is alive."""
        note = self._note()
        if note is None:
            return None
        try:
            self._lock.acquire()
        except RigBusy:
            return None  # a live run holds it
        self._lock.release()
        return note

    def _note(self) -> dict[str, Any] | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            text = os.read(fd, NOTE_BYTES)
        finally:
            os.close(fd)
        with contextlib.suppress(ValueError):
            note = json.loads(text)
            if isinstance(note, dict):
                return note
        return None

"""Per-test artifact folders: console.log, mqtt.jsonl, measurements.json, written as things happen.

Console and MQTT records arrive from long-lived session resources; `ArtifactStore.append`
routes each to the folder of the test running now (or to `_session/` between tests), so a
crash mid-run still leaves every line written so far. A run's folder is claimed only when
something is written to it, and test folders only once `start` says the run uses a rig: the
harness's own unit tests leave no run folders behind.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime
from pathlib import Path
from typing import IO

DEFAULT_BASE = Path("hil-artifacts")
NAME_MAX = 180  # of a test folder's name, well under the 255 bytes file systems allow


def default_root(base: Path = DEFAULT_BASE) -> Path:
    """Claim a new run folder under `base`, named by its start time, and return it.

    Two runs must never share a folder (their brokers' config files and twins' links would
    collide), so the folder is made with an exclusive mkdir; a run that finds its name taken
    adds a suffix. Names sort in the order the runs started.
    """
    base.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    n = 0
    while True:
        path = base / (f"{stamp}-{n:03d}" if n else stamp)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def folder_name(seq: int, nodeid: str) -> str:
    """`0007-test_suites__test_echo.py__test_x[a]`: sorts in run order, unique within a run.

    The sequence number keeps two tests apart even when their ids shorten to the same name.
    """
    name = re.sub(r"[^A-Za-z0-9_.\-\[\]]+", "_", nodeid.replace("::", "__").replace("/", "__"))
    return f"{seq:04d}-{name}"[:NAME_MAX]


class ArtifactStore:
    """Files under one run folder, one folder per test; appends go to the current folder.

    `root` is the folder given (`--hil-artifacts`), or one claimed under `base` the first time
    anything needs it.
    """

    SESSION = "_session"

    def __init__(self, root: Path | None = None, base: Path = DEFAULT_BASE) -> None:
        self.given = root is not None
        self.base = base
        self._root = root
        self.recording = False
        self.test_folder: Path | None = None  # the running test's folder, while recording
        self._seq = 0
        self._files: dict[str, IO[str]] = {}
        self._lock = threading.RLock()

    @property
    def root(self) -> Path:
        with self._lock:
            if self._root is None:
                self._root = default_root(self.base)
            return self._root

    @property
    def where(self) -> str:
        """The run folder as the terminal header names it, without claiming it."""
        if self._root is not None:
            return str(self._root)
        return f"{self.base}/<start time>/"

    @property
    def current(self) -> Path:
        """Where appends go now: the running test's folder, else `_session/`."""
        return self.test_folder or self.root / self.SESSION

    def start(self) -> Path:
        """Give every test from now on its own folder; return the run folder."""
        with self._lock:
            self.recording = True
            self.root.mkdir(parents=True, exist_ok=True)
            return self.root

    def begin_test(self, nodeid: str) -> Path | None:
        """Start `nodeid`'s folder now, so a test that fails before logging anything has one.

        None when the run keeps no test folders (it was never started).
        """
        with self._lock:
            self._close_files()
            if not self.recording:
                return None
            self._seq += 1
            self.test_folder = self.root / folder_name(self._seq, nodeid)
            self.test_folder.mkdir(parents=True, exist_ok=True)
            return self.test_folder

    def end_test(self) -> None:
        with self._lock:
            self._close_files()
            self.test_folder = None

    def append(self, name: str, text: str) -> None:
        with self._lock:
            handle = self._files.get(name)
            if handle is None:
                folder = self.current
                folder.mkdir(parents=True, exist_ok=True)
                handle = self._files[name] = open(  # noqa: SIM115 - kept open until the test ends
                    folder / name, "a", encoding="utf-8"
                )
            handle.write(text)
            handle.flush()

    def sink(self, name: str):
        """A callable that appends to `name` in whichever folder is current."""
        return lambda text: self.append(name, text)

    def write(self, name: str, text: str) -> Path | None:
        """Write `name` in the running test's folder; None when there is none to write to."""
        with self._lock:
            if self.test_folder is None:
                return None
            path = self.test_folder / name
            path.write_text(text, encoding="utf-8")
            return path

    def close(self) -> None:
        with self._lock:
            self._close_files()

    def _close_files(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

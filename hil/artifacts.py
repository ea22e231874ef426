"""Per-test artifact folders: console.log, mqtt.jsonl, measurements.json, written as things happen.

Console and MQTT records arrive from long-lived session resources; `ArtifactStore.append`
routes each to the folder of the test running now (or to `_session/` between tests), so a
crash mid-run still leaves every line written so far.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime
from pathlib import Path
from typing import IO


def default_root(base: Path = Path("hil-artifacts")) -> Path:
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


def _folder_name(nodeid: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-\[\]]+", "_", nodeid.replace("::", "__"))
    return name[:180]


class ArtifactStore:
    """Files under `root`, one folder per test; appends go to the current folder."""

    SESSION = "_session"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.current = root / self.SESSION
        self._files: dict[str, IO[str]] = {}
        self._lock = threading.Lock()

    def begin_test(self, nodeid: str) -> Path:
        """Start `nodeid`'s folder now, so a test that fails before logging anything has one."""
        with self._lock:
            self._close_files()
            self.current = self.root / _folder_name(nodeid)
            self.current.mkdir(parents=True, exist_ok=True)
            return self.current

    def end_test(self) -> None:
        with self._lock:
            self._close_files()
            self.current = self.root / self.SESSION

    def append(self, name: str, text: str) -> None:
        with self._lock:
            handle = self._files.get(name)
            if handle is None:
                self.current.mkdir(parents=True, exist_ok=True)
                handle = self._files[name] = open(  # noqa: SIM115 - kept open until the test ends
                    self.current / name, "a", encoding="utf-8"
                )
            handle.write(text)
            handle.flush()

    def sink(self, name: str):
        """A callable that appends to `name` in whichever folder is current."""
        return lambda text: self.append(name, text)

    def write(self, name: str, text: str) -> Path:
        with self._lock:
            self.current.mkdir(parents=True, exist_ok=True)
            path = self.current / name
            path.write_text(text, encoding="utf-8")
            return path

    def close(self) -> None:
        with self._lock:
            self._close_files()

    def _close_files(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

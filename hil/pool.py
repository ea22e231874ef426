"""A pool of rigs for one run: the `--rig` values as rig files, and a free rig claimed from them.

`--rig` may name several rig files or folders of them, so one runner drives several benches:
with pytest-xdist every worker claims a rig of its own for its whole life (spread), or with
`--each-rig` every suite runs on every rig. Claiming is the rig lock itself (`hil.lock`): a
rig is free when its lock can be taken now, and the first free rig in the pool's order is
taken (an xdist worker starts its turn at its own number, so workers that start together try
different rigs first and a broken rig one gave back is not the next one's first choice).
Each rig's part of the run (`RigRun`) has its own artifact folder, `<run>/<rig name>/` when
the run uses more than one, and its own session, which gives the rig back when it closes
or fails to come up.

Under `--each-rig` the lock is not enough: it keeps two workers from driving a rig at once,
not one after the other, and xdist's `--dist loadgroup` is what keeps a rig's tests on one
worker. When that fails silently (pytest 9.2 with pytest-xdist 3.8, pytest-xdist issue 1386),
a second worker would bring the rig up again between the first one's tests. So each worker
records the rigs it took in its run's claims folder (`RigClaims`), and a rig another worker
of the same run took is refused, naming both. Spread runs keep no claims: their tests stand
alone after bring-up and each worker brings its rig up itself, so a rig one worker gave back
(it finished, or the rig did not come up) is fairly the next waiting worker's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from hil.artifacts import ArtifactStore
from hil.bringup import DeviceState
from hil.firmware import FirmwareFacts
from hil.lock import LockRefused, RigBusy, RigLock
from hil.rig import Rig, load_rig
from hil.schema import ConfigError
from hil.session import RigSession

T = TypeVar("T")
POLL_S = 0.5  # how often a waiting claim tries the pool again
FOLDER_CHARS = re.compile(r"[^A-Za-z0-9_.\-]+")


class PoolBusy(RigBusy):
    """No rig of the pool came free in time; the message names every holder."""


class RigTaken(RuntimeError):
    """Another worker of this run took the rig under --each-rig; the message says why and
    what to do."""


class RigClaims:
    """Which worker of one xdist run took each rig, as a file per rig in `folder`.

    The controller gives its workers one folder per run (named by xdist's testrunuid). A claim
    appears whole or not at all (written aside, then hard-linked into place, which fails when
    another worker's is there), so of two workers taking a rig at once exactly one gets it.
    """

    def __init__(self, folder: Path, worker: str) -> None:
        self.folder = folder
        self.worker = worker

    def take(self, rig: Rig) -> None:
        """Claim `rig` for this worker, or RigTaken when another worker of the run has it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{folder_name(rig.name)}.json"
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".claim-")
        try:
            with os.fdopen(fd, "w") as file:
                json.dump({"rig": str(rig.path), "worker": self.worker, "pid": os.getpid()}, file)
            try:
                os.link(tmp, path)
                return
            except FileExistsError:
                holder = json.loads(path.read_text())["worker"]
        finally:
            os.unlink(tmp)
        if holder != self.worker:
            raise RigTaken(
                f"rig {rig.name!r} ({rig.path}) was taken by worker {holder} of this run, and "
                f"worker {self.worker} was given tests on it too: --each-rig needs each rig's "
                "tests on the one worker holding it, so --dist loadgroup did not keep the rig's "
                "tests together (as pytest 9.2 with pytest-xdist 3.8 do: "
                "pytest-xdist issue 1386). It is not brought up a second time. Fix: "
                "pip install 'pytest<9.2' (or a pytest-xdist that fixes issue 1386) and keep "
                "--dist loadgroup, or run --each-rig without -n"
            )

    @staticmethod
    def forget(folder: Path, worker: str) -> None:
        """Drop `worker`'s claims (it crashed: xdist gives its rig's tests to another)."""
        for path in folder.glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                if json.loads(path.read_text())["worker"] == worker:
                    path.unlink()


def rig_files(values: Iterable[str | Path], base: Path) -> list[Path]:
    """The rig files `values` name, in order: a file as it is, a folder as every `*.toml` in
    it (sorted by name). Relative paths are taken from `base`; a file named twice counts once.
    """
    files: list[Path] = []
    for value in values:
        path = (base / Path(value).expanduser()).resolve()
        if path.is_dir():
            found = sorted(path.glob("*.toml"))
            if not found:
                raise ConfigError("", "a rig folder, but it holds no *.toml rig file", path)
        elif path.is_file():
            found = [path]
        else:
            raise ConfigError(
                "", "no such rig file or folder: name a rig file or a folder of them", path
            )
        files.extend(f for f in found if f not in files)
    return files


def load_pool(values: Iterable[str | Path], base: Path) -> list[Rig]:
    """Every rig `values` name, each validated (ConfigError names the file) and named apart."""
    rigs = [load_rig(path) for path in rig_files(values, base)]
    seen: dict[str, Rig] = {}
    for rig in rigs:
        other = seen.setdefault(folder_name(rig.name), rig)
        if other is not rig:
            raise ConfigError(
                "rig.name",
                f"{other.name!r} names {other.path} already; each rig of a pool needs a name "
                "of its own (tests and artifact folders are named by it)",
                rig.path,
            )
    return rigs


def folder_name(rig_name: str) -> str:
    """A rig's name as the name of its artifact folder (and of its tests' id suffix)."""
    return FOLDER_CHARS.sub("_", rig_name).strip("._") or "rig"


def claim(
    rigs: Sequence[Rig],
    take: Callable[[Rig], T],
    wait_s: float,
    notice: Callable[[str], None],
    poll_s: float = POLL_S,
) -> tuple[Rig, T]:
    """The first rig `take` gets (it raises RigBusy for a rig another run holds) and what it
    returned. While every rig is held, say so once and try again until `wait_s` has passed;
    then PoolBusy naming the holders. A lock that cannot be used safely (LockRefused) is no
    reason to wait: it is raised at once.
    """
    deadline = time.monotonic() + wait_s
    said = False
    while True:
        holders = []
        for rig in rigs:
            try:
                return rig, take(rig)
            except LockRefused:
                raise
            except RigBusy as busy:
                holders.append(str(busy))
        left = deadline - time.monotonic()
        which = "the rig" if len(rigs) == 1 else f"every rig of the pool ({len(rigs)})"
        if left <= 0:
            raise PoolBusy(
                f"{which} stayed in use for {wait_s:g} s: {'; '.join(holders)}. Wait for a "
                "holder to finish, stop one, or give --rig-wait more seconds"
            )
        if not said:
            notice(f"hil: {which} is in use, waiting up to {wait_s:g} s: {'; '.join(holders)}")
            said = True
        time.sleep(min(poll_s, left))


@dataclass(eq=False)
class RigRun:
    """One rig's part of a run: its artifact store, its session while up, and its device."""

    rig: Rig
    store: ArtifactStore
    session: RigSession | None = None
    down: str | None = None  # why the rig could not be brought up, for every test that needs it
    device: DeviceState | None = None
    firmware: FirmwareFacts | None = None  # what --firmware put on this rig's device

    @property
    def name(self) -> str:
        return self.rig.name

    def open(self, notice: Callable[[str], None] | None, doctor: bool = False) -> None:
        """Start the rig's session. RigBusy when another run holds the rig (nothing is left
        open); any other failure is kept in `down`, and the rig is given back."""
        session = RigSession(
            self.rig,
            self.store.root / "_rig",
            console_sink=self.store.sink("console.log"),
            notice=notice,
        )
        try:
            if doctor:
                from hil.doctor import check_rig

                with RigLock(self.rig.path, self.rig.name):
                    pass  # a busy rig is the next one's turn, not a failed check
                check_rig(self.rig, self.store.root / "_doctor")
            session.start()
        except RigBusy:
            raise
        except Exception as exc:  # a rig fault: every test on this rig errors with this message
            self.down = f"rig {self.name!r} could not be brought up: {type(exc).__name__}: {exc}"
            return
        self.session = session

    def close(self) -> None:
        if self.session is not None:
            session, self.session = self.session, None
            session.close()


class RigPool:
    """The rigs one process may use and each one's RigRun, made as the run comes to use it.

    `nested` runs keep each rig's artifacts in `<run>/<rig name>/` (several rigs, --each-rig, or
    an xdist worker, whose siblings share the run folder); otherwise the one rig's artifacts are
    the run folder itself, as for a run without a pool. `wait_s` is how long to wait for a
    rig another run holds (None: not at all). `claims` are the run's under --each-rig on an
    xdist worker: a rig is claimed there when this worker first runs a test on it.
    """

    def __init__(
        self,
        rigs: Sequence[Rig],
        top: ArtifactStore,
        *,
        each: bool,
        nested: bool,
        wait_s: float | None,
        notice: Callable[[str], None] | None = None,
        first: int = 0,
        claims: RigClaims | None = None,
    ) -> None:
        self.rigs = list(rigs)
        self.first = first % len(self.rigs) if self.rigs else 0  # where a claim starts trying
        self.top = top
        self.each = each
        self.nested = nested
        self.wait_s = wait_s
        self.notice = notice or (lambda text: None)
        self.claims = claims
        self.runs: dict[str, RigRun] = {}
        self.claimed: RigRun | None = None
        self.claim_error: str | None = None  # why no rig could be claimed

    @property
    def spread(self) -> bool:
        """Whether this process claims one rig of several (else it uses the rig it is given)."""
        return not self.each and self.nested

    def run(self, name: str) -> RigRun:
        """The RigRun of the rig called `name`, made the first time it is asked for. With
        claims the rig is claimed then; one another worker of the run took is down with the
        reason at once, its tests' artifacts in `<run>/<rig name>@<worker>/`, beside (not
        over) that worker's."""
        found = self.runs.get(name)
        if found is None:
            rig = next(r for r in self.rigs if r.name == name)
            try:
                if self.claims is not None:
                    self.claims.take(rig)
            except RigTaken as taken:
                folder = f"{folder_name(rig.name)}@{self.claims.worker}"
                found = RigRun(rig, ArtifactStore(self.top.root / folder), down=str(taken))
            else:
                found = RigRun(rig, self._store(rig))
            self._register(found)
        return found

    def open(self, run: RigRun, doctor: bool = False) -> None:
        """Bring `run`'s rig up; a rig another run holds is waited for if the pool waits."""

        def take(rig: Rig) -> None:
            run.open(self.notice, doctor)

        try:
            if self.wait_s is None:
                take(run.rig)
            else:
                claim([run.rig], take, self.wait_s, self.notice)
        except RigBusy as busy:
            run.down = f"rig {run.name!r} could not be brought up: {type(busy).__name__}: {busy}"

    def claim(self, doctor: bool = False) -> RigRun | None:
        """The rig this process took for its life: the first free one, taken the first time
        this is called. None when none came free (`claim_error` says why)."""
        if self.claimed is None and self.claim_error is None:

            def take(rig: Rig) -> RigRun:
                run = RigRun(rig, self._store(rig))
                run.open(self.notice, doctor)
                return run

            try:
                order = self.rigs[self.first :] + self.rigs[: self.first]
                _, run = claim(order, take, self.wait_s or 0.0, self.notice)
            except RigBusy as busy:
                self.claim_error = f"no rig to run on: {type(busy).__name__}: {busy}"
            else:
                self.claimed = self._register(run)
        return self.claimed

    def close(self) -> None:
        """Give back every rig still held."""
        for run in self.runs.values():
            run.close()

    def _store(self, rig: Rig) -> ArtifactStore:
        if not self.nested:
            return self.top
        return ArtifactStore(self.top.root / folder_name(rig.name))

    def _register(self, run: RigRun) -> RigRun:
        self.runs[run.name] = run
        if run.store is not self.top and self.top.recording:
            run.store.start()
        return run

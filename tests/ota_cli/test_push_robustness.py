"""`hil ota push` when the world misbehaves: a stray STATUS:ONLINE mid-update, SIGTERM, SIGHUP.

The stray ONLINE is published by a client of our own the moment OTA:BEGIN crosses the broker;
the signals go to a `hil ota push` subprocess on rigs/sim.toml once its progress shows.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import psutil
import pytest

from hil.broker import BrokerEndpoint
from hil.cli import ota as ota_cli
from hil.lock import RigLock
from hil.protocol import ota
from hil.protocol.image import build_image
from tests.ota_cli.conftest import PASSWORD, TOPICS, USER, Watch
from tests.waiting import until

ROOT = Path(__file__).resolve().parents[2]
SIM_RIG = ROOT / "rigs" / "sim.toml"

pytestmark = pytest.mark.repo_rig  # starts twins from the repository's rigs/sim.toml
TWIN_VERSION = "1.0.0"  # rigs/sim.toml [sim] firmware_version
STARTED_S = 60.0  # bring-up, boot and the first acknowledged chunk, on a slow runner
EXIT_S = 30.0
PROGRESS = re.compile(r"\d+/\d+ bytes +[\d.]+ %")


class Injector:
    """Publishes `payload` on the status topic as soon as OTA:BEGIN crosses the broker."""

    def __init__(self, endpoint: BrokerEndpoint, payload: str, timeout: float = 10.0) -> None:
        self.payload = payload
        self.sent = threading.Event()
        subscribed = threading.Event()
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="ota-injector")
        self._client.username_pw_set(USER, PASSWORD)
        self._client.on_connect = lambda c, *_: c.subscribe(TOPICS.firmware_topic, 1)
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(endpoint.host, endpoint.port)
        self._client.loop_start()
        if not subscribed.wait(timeout):
            self.close()
            raise RuntimeError(f"injector not subscribed on {endpoint} within {timeout} s")

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        if message.payload.startswith(b"OTA:BEGIN:") and not self.sent.is_set():
            client.publish(TOPICS.status_topic, self.payload, qos=1)
            self.sent.set()

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def test_online_from_before_success_is_not_the_reboot(
    broker: BrokerEndpoint, rig_file: Path, watch: Watch, tmp_path: Path, capsys
) -> None:
    """A reconnection's STATUS:ONLINE (old version) mid-update must not read as a rollback."""
    image = tmp_path / "fw-2.0.0.bin"
    image.write_bytes(build_image("2.0.0", 12000))
    stale = f"STATUS:ONLINE:{TWIN_VERSION}"
    injector = Injector(broker, stale)
    try:
        code = ota_cli.main(["push", str(image), "--rig", str(rig_file)])
    finally:
        injector.close()
    out, err = capsys.readouterr()

    status = watch.on(TOPICS.status_topic)
    olds = [i for i, payload in enumerate(status) if payload == stale]
    assert injector.sent.is_set() and len(olds) == 2, status
    assert olds[1] < status.index(ota.SUCCESS), "the stray ONLINE must come before OTA:SUCCESS"
    assert code == 0, err
    assert "rolled back" not in err
    assert out.strip().endswith("device now reports 2.0.0"), out


def gone(processes: list[psutil.Process]) -> bool:
    for p in processes:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


class Push:
    """A `hil ota push` subprocess whose stderr is collected line by line as it comes."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        code = "import sys; from hil.cli import main; sys.exit(main())"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, "ota", "push", *argv],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_progress(self, timeout: float) -> None:
        """Wait for the first progress line: the device has acknowledged a chunk."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(PROGRESS.search(line) for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise AssertionError(f"no push progress within {timeout} s: {self.lines}")
                self._changed.wait(min(left, 0.5))

    def finish(self, timeout: float) -> tuple[int, str]:
        self.process.wait(timeout)
        self._reader.join(timeout)
        return self.process.returncode, "".join(self.lines)


@pytest.fixture
def start_push(tmp_path: Path, monkeypatch) -> Iterator[Callable[..., Push]]:
    """Start pushes on rigs/sim.toml with a lock folder and TMPDIR of their own; whatever is
    left running at the end is killed with its process group."""
    monkeypatch.setenv("HIL_LOCK_DIR", str(tmp_path / "locks"))
    (tmp_path / "tmp").mkdir()
    env = os.environ | {
        "TMPDIR": str(tmp_path / "tmp"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    image = tmp_path / "fw-2.0.0.bin"
    image.write_bytes(build_image("2.0.0", 300_000))  # half a minute on the twin's UART
    pushes: list[Push] = []

    def start(*extra: str) -> Push:
        pushes.append(Push([str(image), "--rig", str(SIM_RIG), *extra], env, tmp_path))
        return pushes[-1]

    yield start
    for push in pushes:
        if push.process.poll() is None:
            os.killpg(push.process.pid, signal.SIGKILL)
            push.process.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_signal_mid_push_gives_the_rig_back(start_push, tmp_path: Path, sig) -> None:
    push = start_push()
    push.wait_progress(STARTED_S)
    workdirs = list((tmp_path / "tmp").glob("hil-ota-*"))
    assert len(workdirs) == 1, workdirs
    children = psutil.Process(push.process.pid).children(recursive=True)
    spawned = " | ".join(" ".join(p.cmdline()) for p in children)
    assert "mosquitto" in spawned and "hil.sim" in spawned, spawned

    push.process.send_signal(sig)
    code, err = push.finish(EXIT_S)

    assert code == 128 + sig, err
    assert f"interrupted by {sig.name}; the rig was given back" in err
    assert "Traceback" not in err and "never retrieved" not in err, err
    until(lambda: gone(children), 10, f"the broker and twin stopping ({spawned})")
    assert not workdirs[0].exists(), "the temporary folder holding the profile was left behind"
    with RigLock(SIM_RIG):  # released: taking it again works at once
        pass


def test_sigterm_leaves_the_modem_powered(start_push, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    push = start_push("--workdir", str(workdir))
    push.wait_progress(STARTED_S)
    push.process.send_signal(signal.SIGTERM)
    code, err = push.finish(EXIT_S)
    assert code == 128 + signal.SIGTERM, err
    logs = list((workdir / "sim").glob("hil-sim-*.log"))
    assert logs, f"no twin log in {workdir / 'sim'}"
    lines = logs[0].read_text().splitlines()
    for supply in ("modem", "board"):  # each relay channel's last switch left it powered
        switched = [line for line in lines if f"{supply} relay" in line]
        assert not switched or f"{supply} on" in switched[-1], switched
    assert any("modem relay" in line for line in lines), "the twin logged no relay switch"

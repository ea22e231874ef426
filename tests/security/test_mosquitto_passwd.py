"""The spawned mosquitto's password never goes on a command line, and mosquitto still takes it.

Any local user can read /proc/<pid>/cmdline, so a password in a child's argv (as with
`mosquitto_passwd -b`) is a leak. The checks that the hash is right are independent of hil:
`mosquitto_pub` logs in against the spawned broker, and `mosquitto_passwd` (fed on stdin, as its
prompt reads when stdin is no tty) hashes the same password with the same salt.
"""

from __future__ import annotations

import base64
import json
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hil.broker import BrokerEndpoint
from hil.broker.auth import mosquitto_password_line
from hil.broker.mosquitto import MosquittoBroker, MosquittoOptions
from hil.mqtt import MqttRecorder
from hil.rig import load_rig
from hil.schema import ConfigError
from tests.core.conftest import needs_mosquitto

# Spaces, '$' and ':' (the file's separators), quotes and non-ASCII: all must survive hashing.
PASSWORD = "Pw 5ecret:$7$ 'q\" ünï"
USER = "ESP32"
ENV = "HIL_TEST_PASSWD_PW"


def cmdlines() -> dict[int, bytes]:
    """Every readable process's argv, as the kernel shows it to any local user."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:
                continue  # gone meanwhile
    return found


def mosquitto_pub(endpoint: BrokerEndpoint, user: str, password: str) -> int:
    """Exit status of one QoS 1 publish logging in as `user` (0: the broker took the login)."""
    where = ["-h", endpoint.host, "-p", str(endpoint.port), "-t", "t", "-m", "x", "-q", "1"]
    argv = ["mosquitto_pub", *where, "-u", user, "-P", password]
    return subprocess.run(argv, capture_output=True, timeout=10).returncode


@pytest.fixture
def argvs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The argv of every child started through subprocess (run() uses Popen too)."""
    seen: list[list[str]] = []
    real = subprocess.Popen

    class Recording(real):  # type: ignore[misc, valid-type]
        def __init__(self, args, *a, **kw) -> None:
            seen.append([str(x) for x in ([args] if isinstance(args, str | bytes) else args)])
            super().__init__(args, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", Recording)
    return seen


@dataclass
class Started:
    driver: MosquittoBroker
    endpoint: BrokerEndpoint
    argvs: list[list[str]]  # every child start() spawned
    leaked: list[int]  # pids whose /proc cmdline held the password once start() returned


@pytest.fixture
def started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argvs: list[list[str]]
) -> Iterator[Started]:
    monkeypatch.setenv(ENV, PASSWORD)
    driver = MosquittoBroker(MosquittoOptions(username=USER, password_env=ENV), tmp_path)
    endpoint = driver.start()
    leaked = sorted(pid for pid, argv in cmdlines().items() if PASSWORD.encode() in argv)
    monkeypatch.undo()  # the tests' own clients pass the password in argv: that is theirs
    try:
        yield Started(driver, endpoint, list(argvs), leaked)
    finally:
        driver.stop()


@needs_mosquitto
def test_password_is_in_no_argv_and_mosquitto_takes_it(started: Started) -> None:
    assert any(Path(a[0]).name == "mosquitto" for a in started.argvs), started.argvs
    assert not [a for a in started.argvs if any(PASSWORD in part for part in a)], started.argvs
    assert not started.leaked, f"the password is in /proc/<pid>/cmdline of {started.leaked}"
    endpoint = started.endpoint
    assert mosquitto_pub(endpoint, USER, PASSWORD) == 0, "the right password logs in"
    assert mosquitto_pub(endpoint, USER, PASSWORD + "x") != 0, "a wrong one is refused"
    assert mosquitto_pub(endpoint, "other", PASSWORD) != 0, "another user is refused"


@needs_mosquitto
async def test_the_harness_client_logs_in(started: Started) -> None:
    async with MqttRecorder(started.endpoint, ["t"]) as mqtt:
        await mqtt.publish("t", "hello")
        await mqtt.expect("t", "hello", timeout=5)


@needs_mosquitto
def test_password_file_is_private_and_gone_after_stop(started: Started, tmp_path: Path) -> None:
    conf = (tmp_path / "mosquitto.conf").read_text()
    (pwfile,) = [
        Path(line.split(" ", 1)[1])
        for line in conf.splitlines()
        if line.startswith("password_file ")
    ]
    assert tmp_path not in pwfile.parents, "the hash stays out of the artifacts"
    assert stat.S_IMODE(pwfile.stat().st_mode) == 0o600
    assert stat.S_IMODE(pwfile.parent.stat().st_mode) == 0o700
    assert PASSWORD not in pwfile.read_text()
    started.driver.stop()
    assert not pwfile.exists()


@pytest.mark.skipif(not shutil.which("mosquitto_passwd"), reason="mosquitto_passwd not installed")
def test_hash_line_matches_mosquitto_passwd(tmp_path: Path) -> None:
    pwfile = tmp_path / "passwd"
    pwfile.touch()
    # Not a tty: mosquitto_passwd reads the password and its confirmation as lines of stdin.
    subprocess.run(
        ["mosquitto_passwd", str(pwfile), USER],
        input=f"{PASSWORD}\n{PASSWORD}\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    theirs = pwfile.read_text()
    _, kind, iterations, salt, _ = theirs.strip().split(":", 1)[1].split("$")
    assert kind == "7"
    ours = mosquitto_password_line(USER, PASSWORD, int(iterations), base64.b64decode(salt))
    assert ours == theirs


@pytest.mark.parametrize("name", ["a:b", "a\nb"])
def test_username_that_would_break_the_password_file_is_refused(tmp_path: Path, name) -> None:
    rig = tmp_path / "rig.toml"
    rig.write_text(
        '[rig]\nname = "t"\n[console]\ndriver = "serial"\nport = "/dev/ttyACM0"\n'
        f'[broker]\ndriver = "mosquitto"\nusername = {json.dumps(name)}\n'
    )
    with pytest.raises(ConfigError) as info:
        load_rig(rig)
    assert info.value.key == "broker" and "cannot hold ':'" in str(info.value)

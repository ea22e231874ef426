"""TLS against a real mosquitto: CA checks, mutual TLS, passwords; one clear error per refusal.

Certificates are made per test; `openssl verify` and `mosquitto_sub` check them independently
of the harness's own client.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from pathlib import Path

import pytest

from hil.broker import BrokerEndpoint, BrokerError, TlsFiles
from hil.broker.mosquitto import MosquittoBroker, MosquittoOptions
from hil.broker.tls import LOOPBACK_NAMES, Authority, BrokerPki
from hil.mqtt import MqttRecorder
from hil.rig import parse_rig
from hil.schema import ConfigError
from tests.core.conftest import needs_mosquitto

PASSWORD_VAR = "HIL_TEST_TLS_PW"
RIG_HEAD = '[console]\ndriver = "serial"\nport = "/dev/null"\n[broker]\ndriver = "mosquitto"\n'
CONNECT_LIMIT_S = 3.0  # a refusal is reported at once, not after the client's 10 s timeout

pytestmark = needs_mosquitto


@pytest.fixture
def lab_pki(tmp_path: Path) -> BrokerPki:
    """A CA with a server pair for loopback and a client pair, as a lab would hand out."""
    return BrokerPki.create(tmp_path / "pki", client=True)


def spawn(tmp_path: Path, **options) -> tuple[MosquittoBroker, BrokerEndpoint]:
    driver = MosquittoBroker(MosquittoOptions(tls=True, **options), tmp_path / "broker")
    return driver, driver.start()


@pytest.fixture
def mutual(tmp_path: Path, lab_pki: BrokerPki, monkeypatch):
    """Mosquitto on the lab's files, requiring a client certificate and a password."""
    monkeypatch.setenv(PASSWORD_VAR, "tls-pw-123")
    driver, endpoint = spawn(
        tmp_path,
        cafile=str(lab_pki.ca),
        certfile=str(lab_pki.server.cert),
        keyfile=str(lab_pki.server.key),
        require_certificate=True,
        cert=str(lab_pki.client.cert),
        key=str(lab_pki.client.key),
        username="hil",
        password_env=PASSWORD_VAR,
    )
    yield endpoint
    driver.stop()


async def refusal(endpoint: BrokerEndpoint) -> str:
    """The one BrokerError a bad endpoint gets, raised well within the connect timeout."""
    start = time.monotonic()
    with pytest.raises(BrokerError) as caught:
        async with MqttRecorder(endpoint, ["t"]):
            pass
    assert time.monotonic() - start < CONNECT_LIMIT_S
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    return str(caught.value)


def test_openssl_accepts_the_generated_chain(lab_pki: BrokerPki) -> None:
    for issued in (lab_pki.server, lab_pki.client):
        out = subprocess.run(
            ["openssl", "verify", "-CAfile", str(lab_pki.ca), str(issued.cert)],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(lab_pki.server.cert)],
        capture_output=True,
        text=True,
    ).stdout
    assert all(name in text for name in LOOPBACK_NAMES)


async def test_recorder_verifies_the_broker_against_the_ca(tmp_path: Path) -> None:
    driver, endpoint = spawn(tmp_path)
    try:
        assert str(endpoint).startswith("mqtts://") and endpoint.tls.cert is None
        async with MqttRecorder(endpoint, ["esp32_status"]) as mqtt:
            await mqtt.publish("esp32_status", "STATUS:ONLINE:1.0.0")
            await mqtt.expect("esp32_status", "STATUS:ONLINE:1.0.0", timeout=5)
    finally:
        driver.stop()


async def test_mutual_tls_with_password_and_mosquitto_sub(mutual: BrokerEndpoint) -> None:
    tls = mutual.tls
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            mutual.host,
            "-p",
            str(mutual.port),
            "-t",
            "server_cmd",
            "-C",
            "1",
            "-W",
            "10",
            "-q",
            "1",
            "--cafile",
            str(tls.ca),
            "--cert",
            str(tls.cert),
            "--key",
            str(tls.key),
            "-u",
            mutual.username,
            "-P",
            mutual.password,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        async with MqttRecorder(mutual, ["esp32_status"]) as mqtt:
            # mosquitto_sub has no ready signal: publish until it has subscribed and got one.
            for _ in range(50):
                await mqtt.publish("server_cmd", "qNOY0tmppmDP1kJJYmmTIA==")
                try:
                    out, err = sub.communicate(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    continue
    finally:
        sub.kill()
    assert out.strip() == "qNOY0tmppmDP1kJJYmmTIA==", err


def test_mosquitto_sub_without_client_certificate_is_refused(mutual: BrokerEndpoint) -> None:
    out = subprocess.run(
        [
            "mosquitto_sub",
            "-h",
            mutual.host,
            "-p",
            str(mutual.port),
            "-t",
            "t",
            "-C",
            "1",
            "-W",
            "3",
            "--cafile",
            str(mutual.tls.ca),
            "-u",
            mutual.username,
            "-P",
            mutual.password,
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.returncode != 0


async def test_wrong_ca_is_named_with_the_fix(mutual: BrokerEndpoint, tmp_path: Path) -> None:
    other = Authority.create(tmp_path / "other", "some other CA")
    message = await refusal(
        dataclasses.replace(mutual, tls=dataclasses.replace(mutual.tls, ca=other.cert))
    )
    assert f"cannot connect to broker {mutual}" in message
    assert f"server certificate not trusted by ca {other.cert}" in message
    assert "certificate verify failed" in message and "set [broker] ca" in message


async def test_missing_client_certificate_says_set_cert_and_key(mutual: BrokerEndpoint) -> None:
    message = await refusal(dataclasses.replace(mutual, tls=TlsFiles(ca=mutual.tls.ca)))
    assert message.endswith("broker requires a client certificate: set cert and key in [broker]")


async def test_foreign_client_certificate_is_named(mutual: BrokerEndpoint, tmp_path: Path) -> None:
    foreign = BrokerPki.create(tmp_path / "foreign", client=True).client
    tls = dataclasses.replace(mutual.tls, cert=foreign.cert, key=foreign.key)
    message = await refusal(dataclasses.replace(mutual, tls=tls))
    assert f"broker refused the client certificate {foreign.cert}" in message


async def test_wrong_password_names_the_variable_not_the_value(mutual: BrokerEndpoint) -> None:
    message = await refusal(dataclasses.replace(mutual, password="not-it"))
    assert f"bad username or password (from ${PASSWORD_VAR})" in message
    assert "not-it" not in message and "tls-pw-123" not in message


def test_generated_keys_stay_out_of_the_workdir_and_go_at_stop(tmp_path: Path) -> None:
    driver, endpoint = spawn(tmp_path, require_certificate=True)
    pki_dir = endpoint.tls.key.parent
    assert pki_dir.is_dir() and not pki_dir.is_relative_to(tmp_path)
    assert endpoint.tls.key.stat().st_mode & 0o077 == 0
    driver.stop()
    assert not pki_dir.exists()
    assert not list((tmp_path / "broker").glob("*.key"))


@pytest.mark.parametrize(
    ("table", "complaint"),
    [
        ('tls = true\ncafile = "ca.pem"', "cafile, certfile and keyfile go together"),
        ("require_certificate = true", "certificate keys need tls = true"),
        ('tls = true\ncert = "ca.pem"', "cert and key go together"),
    ],
)
def test_rig_tls_keys_are_validated(tmp_path: Path, table: str, complaint: str) -> None:
    import tomllib

    (tmp_path / "ca.pem").write_text("")
    rig = f"{RIG_HEAD}{table}\n"
    with pytest.raises(ConfigError, match=complaint):
        parse_rig(tomllib.loads(rig), tmp_path / "rig.toml")


def test_rig_tls_files_resolve_relative_to_the_rig(tmp_path: Path, lab_pki: BrokerPki) -> None:
    import tomllib

    rig = (
        f'{RIG_HEAD}tls = true\ncafile = "pki/{lab_pki.ca.name}"\n'
        f'certfile = "pki/{lab_pki.server.cert.name}"\n'
        f'keyfile = "pki/{lab_pki.server.key.name}"\n'
    )
    options = parse_rig(tomllib.loads(rig), tmp_path / "rig.toml").broker.options
    assert Path(options.cafile) == lab_pki.ca

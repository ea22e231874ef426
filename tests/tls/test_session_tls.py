"""The virtual TLS rig's certificates for a session, checked by openssl and by mosquitto's own
clients: the broker they start refuses a client without a certificate its CA signed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hil.broker import TlsFiles
from hil.profile import load_profile
from hil.rig import load_rig
from hil.sim.credentials import session_tls
from hil.sim.options import SimOptions
from hil.sim.process import TwinProcess
from tests.tls.conftest import needs_openssl_and_mosquitto

ROOT = Path(__file__).resolve().parents[2]
TLS_RIG = ROOT / "rigs" / "sim-tls.toml"


def openssl(*args: str) -> str:
    out = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    return out.stdout


def mosquitto_pub(port: int, ca: Path, *pair: Path) -> subprocess.CompletedProcess[str]:
    tls = ["--cafile", str(ca)]
    if pair:
        tls += ["--cert", str(pair[0]), "--key", str(pair[1])]
    return subprocess.run(
        ["mosquitto_pub", "-h", "localhost", "-p", str(port), *tls, "-t", "t", "-m", "x"],
        capture_output=True,
        text=True,
        timeout=10,
    )


def test_the_tls_rig_gets_a_ca_and_pairs_made_for_the_session(tmp_path: Path) -> None:
    tls = session_tls(load_rig(TLS_RIG).broker, tmp_path)
    options, device = tls.broker.options, tls.device
    assert device is not None and device.cert is not None and device.key is not None
    assert device.ca == Path(options.cafile) and device.cert != Path(options.cert)
    for cert in (options.certfile, options.cert, device.cert):
        assert openssl("verify", "-CAfile", options.cafile, str(cert)).strip().endswith("OK")
    assert openssl("x509", "-noout", "-subject", "-in", str(device.cert)).strip() == (
        "subject=CN = hil device"
    )
    usage = openssl("x509", "-noout", "-ext", "extendedKeyUsage", "-in", str(device.cert))
    assert "TLS Web Client Authentication" in usage
    assert "DNS:localhost" in openssl(
        "x509", "-noout", "-ext", "subjectAltName", "-in", options.certfile
    )
    for key in (options.keyfile, options.key, device.key):
        assert Path(key).parent == tmp_path and Path(key).stat().st_mode & 0o077 == 0


@needs_openssl_and_mosquitto
def test_the_session_broker_refuses_a_client_without_a_certificate(tmp_path: Path) -> None:
    tls = session_tls(load_rig(TLS_RIG).broker, tmp_path / "private")
    assert tls.device is not None and tls.device.cert and tls.device.key
    broker = tls.broker.cls(tls.broker.options, tmp_path / "broker")
    endpoint = broker.start()
    try:
        assert endpoint.host == "localhost"
        refused = mosquitto_pub(endpoint.port, tls.device.ca)
        assert refused.returncode != 0, refused
        assert "peer did not return a certificate" in broker.log_path.read_text()
        accepted = mosquitto_pub(endpoint.port, tls.device.ca, tls.device.cert, tls.device.key)
        assert accepted.returncode == 0, accepted.stderr
    finally:
        broker.stop()


def test_a_rig_with_its_own_files_keeps_them(tmp_path: Path) -> None:
    for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key"):
        (tmp_path / name).write_text("")
    rig = tmp_path / "rig.toml"
    rig.write_text(
        TLS_RIG.read_text().replace(
            "require_certificate = true\n",
            'require_certificate = true\ncafile = "ca.pem"\ncertfile = "server.pem"\n'
            'keyfile = "server.key"\ncert = "client.pem"\nkey = "client.key"\n',
        )
    )
    broker = load_rig(rig).broker
    tls = session_tls(broker, tmp_path / "unused")
    assert tls.broker is broker and tls.pki is None and not (tmp_path / "unused").exists()
    pair = tmp_path / "client.pem", tmp_path / "client.key"
    assert tls.device == TlsFiles(tmp_path / "ca.pem", *pair)


def test_a_plain_broker_needs_no_certificates(tmp_path: Path) -> None:
    broker = load_rig(ROOT / "rigs" / "sim.toml").broker
    tls = session_tls(broker, tmp_path)
    assert tls.broker is broker and tls.device is None and not list(tmp_path.iterdir())


def test_a_twin_over_tls_needs_the_ca(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs the CA that signed the broker's certificate"):
        TwinProcess().start(
            tmp_path, "localhost:8883", load_profile(), SimOptions(), tls=TlsFiles(ca=None)
        )
    assert not list(tmp_path.glob("hil-sim-*.log"))  # refused before anything started


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--cert", "device.pem"], "--cert and --key go together"),
        (["--cert", "device.pem", "--key", "device.key"], "--cert and --key need --ca"),
        (["--ca", "missing.pem"], "--ca missing.pem: cannot read it"),
    ],
)
def test_the_twin_refuses_incomplete_tls_files(
    tmp_path: Path, args: list[str], complaint: str
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hil.sim", "--broker", "localhost:1", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and complaint in out.stderr, out.stderr

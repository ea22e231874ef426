"""`hil ota serve` as a user runs it: a URL to give the device, a line per request, HTTPS, and
SIGINT or SIGTERM as the way it stops; one clear line for what it cannot serve (asked of its
`main` in this process, as nothing is served then)."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.cli import ota as ota_cli
from tests.http_ota.conftest import curl, cut

HIL = shutil.which("hil") or "hil"  # the console script, as a user runs it
STOP_S = 10.0


class Serving:
    """`hil ota serve ...` as a child process whose stdout is read line by line."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [HIL, "ota", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # SIGINT reaches it as from a terminal, even under a shell that ignores it for
            # background jobs.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        assert self.process.stdout is not None
        self.first = self.process.stdout.readline()

    @property
    def url(self) -> str:
        m = re.search(r" at (\S+)/firmware\.bin,", self.first)
        assert m, f"no URL in {self.first!r}"
        return m[1]

    def stop(self, sig: signal.Signals) -> tuple[int, str, str]:
        self.process.send_signal(sig)
        out, err = self.process.communicate(timeout=STOP_S)
        return self.process.returncode, out, err


@pytest.fixture
def serving() -> Iterator[list[Serving]]:
    started: list[Serving] = []
    yield started
    for child in started:
        if child.process.poll() is None:
            child.process.kill()
            child.process.wait()


def test_serves_ranges_logs_each_request_and_stops_on_sigterm(
    serving: list[Serving], image_file: Path
) -> None:
    child = Serving(str(image_file), "--host", "127.0.0.1", "--port", "0")
    serving.append(child)
    assert "(2.4.0, 20000 bytes)" in child.first
    got = curl(child.url + "/firmware.bin", "-r", "0-99")
    assert got.status == 206 and got.body == cut(image_file, 0, 100)
    assert curl(child.url + "/version").body == b"2.4.0\n"
    code, out, err = child.stop(signal.SIGTERM)
    assert code == 0
    assert "GET /firmware.bin [Range: bytes=0-99] -> 206, 100 bytes" in out
    assert "GET /version -> 200, 6 bytes" in out
    assert err.strip() == "hil ota serve: stopped after 2 requests (SIGTERM)"
    with pytest.raises(OSError):  # nothing listens there any more
        socket.create_connection(("127.0.0.1", int(child.url.rsplit(":", 1)[1])), timeout=2)


def test_ctrl_c_stops_it_too(serving: list[Serving], image_file: Path) -> None:
    child = Serving(str(image_file), "--host", "127.0.0.1", "--port", "0")
    serving.append(child)
    code, _out, err = child.stop(signal.SIGINT)
    assert code == 0
    assert err.strip() == "hil ota serve: stopped after 0 requests (SIGINT)"


def test_https_with_a_certificate_and_key(
    serving: list[Serving], image_file: Path, certificate
) -> None:
    cert, key = certificate
    child = Serving(
        str(image_file),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    )
    serving.append(child)
    assert child.url.startswith("https://127.0.0.1:")
    got = curl(child.url + "/firmware.bin", "-r", "-64", cacert=cert)
    assert got.status == 206 and got.body == cut(image_file, 20000 - 64)
    assert child.stop(signal.SIGTERM)[0] == 0


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`hil ota serve ARGS` in this process, for the answers that come before it serves."""
    code = ota_cli.main(["serve", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_what_it_cannot_serve_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, image_file: Path
) -> None:
    zeros = tmp_path / "zero.bin"
    zeros.write_bytes(bytes(2048))
    cases = [
        ([str(zeros)], f"{zeros} is not an ESP32 app image"),
        ([str(tmp_path / "missing.bin")], "cannot read"),
        ([str(image_file), "--tls-cert", str(image_file)], "--tls-cert and --tls-key go together"),
        (
            [str(image_file), "--tls-cert", str(image_file), "--tls-key", str(image_file)],
            "as a TLS certificate and key",
        ),
    ]
    for args, says in cases:
        code, out, err = run(capsys, *args, "--host", "127.0.0.1", "--port", "0")
        assert code == 1, (args, err)
        assert out == ""
        assert err.count("\n") == 1 and says in err, err


def test_a_port_in_use_is_named(capsys: pytest.CaptureFixture[str], image_file: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _out, err = run(capsys, str(image_file), "--host", "127.0.0.1", "--port", str(port))
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err


def test_a_bad_port_is_a_usage_error(capsys: pytest.CaptureFixture[str], image_file: Path) -> None:
    code, _out, err = run(capsys, str(image_file), "--port", "70000")
    assert code == 2 and "not a TCP port" in err

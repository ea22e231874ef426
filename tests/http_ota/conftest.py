"""Images on disk, a TLS certificate made by openssl, and curl as the independent client."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from hil.protocol.image import build_image

IMAGE_SIZE = 20000
CURL_TIMEOUT_S = 20


@dataclass(frozen=True)
class Answer:
    """What curl got: exit status, HTTP status, response headers (lower-case names), body."""

    exit: int
    status: int
    headers: dict[str, str]
    body: bytes


def curl(url: str, *args: str, cacert: Path | None = None) -> Answer:
    """One request with curl; headers and body kept apart (-D and -o to files of their own)."""
    folder = Path(tempfile.mkdtemp(prefix="hil-curl-"))
    head, body = folder / "head", folder / "body"
    argv = ["curl", "-sS", "-D", str(head), "-o", str(body), *args, url]
    if cacert is not None:
        argv[1:1] = ["--cacert", str(cacert)]
    done = subprocess.run(argv, capture_output=True, timeout=CURL_TIMEOUT_S, check=False)
    lines = (head.read_bytes().decode("latin-1").splitlines() if head.exists() else []) or [""]
    status = int(lines[0].split()[1]) if lines[0] else 0
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Answer(done.returncode, status, headers, body.read_bytes() if body.exists() else b"")


@pytest.fixture(scope="session")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("image") / "firmware.bin"
    path.write_bytes(build_image("2.4.0", IMAGE_SIZE, project="http-ota-test", seed=4))
    return path


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, by openssl."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "server.pem", folder / "server.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def cut(path: Path, skip: int, count: int | None = None) -> bytes:
    """Bytes of `path` as dd cuts them (the reference for a range)."""
    argv = ["dd", f"if={path}", "bs=1", f"skip={skip}", "status=none"]
    if count is not None:
        argv.append(f"count={count}")
    return subprocess.run(argv, capture_output=True, check=True, timeout=30).stdout


# A twin behind a real mosquitto, watched from outside (tests/sim's fixtures).
from tests.sim.conftest import mosquitto, start_twin  # noqa: E402, F401

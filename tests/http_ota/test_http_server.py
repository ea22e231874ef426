"""The suites' image server, read by curl: byte ranges as RFC 9110 has them, /version as
esptool reads the image, TLS, a cut curl resumes from, a corrupted copy, and the request log."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from hil.ota.http_server import ImageServer, ServedRequest, ServeError, tls_context
from tests.http_ota.conftest import IMAGE_SIZE, curl, cut


@pytest.fixture
def server(image_file: Path):
    with ImageServer(image_file.read_bytes()) as running:
        yield running


def test_a_range_is_partial_content(server: ImageServer, image_file: Path) -> None:
    got = curl(server.image_url, "-r", "100-1099")
    assert got.status == 206
    assert got.headers["content-range"] == f"bytes 100-1099/{IMAGE_SIZE}"
    assert got.headers["content-length"] == "1000"
    assert got.headers["accept-ranges"] == "bytes"
    assert got.body == cut(image_file, 100, 1000)


@pytest.mark.parametrize(
    ("asked", "start", "count"),
    [
        ("19000-", 19000, None),  # to the end
        ("19500-99999", 19500, None),  # an end past the image is the image's end
        ("-300", IMAGE_SIZE - 300, None),  # the last 300 bytes
        ("0-0", 0, 1),
    ],
)
def test_open_suffix_and_clipped_ranges(
    server: ImageServer, image_file: Path, asked: str, start: int, count: int | None
) -> None:
    got = curl(server.image_url, "-r", asked)
    assert got.status == 206
    assert got.body == cut(image_file, start, count)
    end = start + len(got.body) - 1
    assert got.headers["content-range"] == f"bytes {start}-{end}/{IMAGE_SIZE}"


@pytest.mark.parametrize("asked", [f"{IMAGE_SIZE}-", f"{IMAGE_SIZE + 5}-{IMAGE_SIZE + 9}", "-0"])
def test_a_range_past_the_end_is_416(server: ImageServer, asked: str) -> None:
    got = curl(server.image_url, "-r", asked)
    assert got.status == 416
    assert got.headers["content-range"] == f"bytes */{IMAGE_SIZE}"
    assert got.body == b""


@pytest.mark.parametrize(
    "header",
    ["Range: bytes=500-100", "Range: bytes=0-1,5-6", "Range: items=0-9", "Range: bytes=x-"],
)
def test_a_range_it_does_not_take_is_ignored(
    server: ImageServer, image_file: Path, header: str
) -> None:
    got = curl(server.image_url, "-H", header)
    assert got.status == 200
    assert got.body == image_file.read_bytes()


def test_the_whole_image_and_its_head(server: ImageServer, image_file: Path) -> None:
    got = curl(server.image_url)
    assert got.status == 200 and got.headers["accept-ranges"] == "bytes"
    reference = subprocess.run(
        ["sha256sum", str(image_file)], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    assert hashlib.sha256(got.body).hexdigest() == reference
    head = curl(server.image_url, "-I")
    assert head.status == 200
    assert head.headers["content-length"] == str(IMAGE_SIZE)
    assert head.body.endswith(b"\r\n\r\n"), "curl -I writes the headers alone, no body"
    assert server.requests[-1].method == "HEAD"


def test_version_is_the_one_esptool_reads(server: ImageServer, image_file: Path) -> None:
    info = subprocess.run(
        ["esptool", "image-info", str(image_file)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    version = re.search(r"^App version: (\S+)$", info, re.M)[1]
    got = curl(server.url + "/version")
    assert got.status == 200
    assert got.body.decode().strip() == version


def test_other_paths_are_404(server: ImageServer) -> None:
    assert curl(server.url + "/firmware.bin.sig").status == 404
    assert curl(server.url + "/").status == 404


def test_curl_resumes_a_cut_download_from_the_cut(server: ImageServer, image_file: Path) -> None:
    server.cut_at(7777)
    partial = image_file.parent / "partial.bin"
    first = subprocess.run(
        ["curl", "-sS", "-o", str(partial), server.image_url], capture_output=True, check=False
    )
    assert first.returncode == 18, "curl must see the body end early (CURLE_PARTIAL_FILE)"
    assert partial.stat().st_size == 7777
    again = subprocess.run(
        ["curl", "-sS", "-C", "-", "-o", str(partial), server.image_url],
        capture_output=True,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert subprocess.run(["cmp", str(partial), str(image_file)], check=False).returncode == 0
    log = server.requests
    assert [(r.range, r.status, r.sent, r.complete) for r in log] == [
        (None, 200, 7777, False),
        ("bytes=7777-", 206, IMAGE_SIZE - 7777, True),
    ]


def test_a_corrupted_copy_differs_in_one_byte(server: ImageServer, image_file: Path) -> None:
    offset = server.corrupt()
    copy = image_file.parent / "corrupt.bin"
    copy.write_bytes(curl(server.image_url).body)
    differing = subprocess.run(
        ["cmp", "-l", str(copy), str(image_file)], capture_output=True, text=True, check=False
    ).stdout.split("\n")
    assert [line.split()[0] for line in differing if line] == [str(offset + 1)]  # cmp counts from 1
    assert curl(server.url + "/version").body.decode().strip() == "2.4.0", "/version still right"
    server.serve(image_file.read_bytes())
    assert curl(server.image_url).body == image_file.read_bytes()


def test_https_with_the_servers_certificate(image_file: Path, certificate) -> None:
    cert, key = certificate
    with ImageServer(image_file.read_bytes(), tls=tls_context(str(cert), str(key))) as server:
        assert server.url.startswith("https://127.0.0.1:")
        got = curl(server.image_url, "-r", "0-15", cacert=cert)
        assert got.status == 206 and got.body == cut(image_file, 0, 16)
        unknown = curl(server.image_url)  # without the CA: curl refuses the certificate
        assert unknown.exit == 60 and unknown.status == 0
        assert [r.range for r in server.requests] == ["bytes=0-15"]


def test_every_request_is_reported_as_it_is_answered(image_file: Path) -> None:
    seen: list[ServedRequest] = []
    with ImageServer(image_file.read_bytes(), on_request=seen.append) as server:
        curl(server.url + "/version")
        curl(server.image_url, "-r", "10-19")
        curl(server.url + "/missing")
    assert [(r.method, r.path, r.status, r.start, r.length) for r in seen] == [
        ("GET", "/version", 200, None, 6),
        ("GET", "/firmware.bin", 206, 10, 10),
        ("GET", "/missing", 404, None, seen[2].length),
    ]
    assert all(r.client == "127.0.0.1" for r in seen)
    assert '"range": "bytes=10-19"' in seen[1].to_json()


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"\0" * 2048, "is not an ESP32 app image"),  # the seed's dd if=/dev/zero test file
        (b"", "is not an ESP32 app image"),
    ],
)
def test_what_is_no_image_is_refused_with_its_name(data: bytes, says: str) -> None:
    with pytest.raises(ServeError) as caught:
        ImageServer(data, name="build/zero.bin")
    assert "build/zero.bin" in str(caught.value) and says in str(caught.value)


def test_a_cut_must_fall_inside_the_image(server: ImageServer) -> None:
    with pytest.raises(ValueError, match="not inside"):
        server.cut_at(IMAGE_SIZE)

"""An HTTP(S) server for OTA images (seed 003): `/firmware.bin` with range requests and
`/version`, the version from the image's own app descriptor.

`/firmware.bin` answers `GET` and `HEAD` as RFC 9110 says for a single byte range:
`Accept-Ranges: bytes` always, `206 Partial Content` with `Content-Range` for a satisfiable
`Range: bytes=a-b`, `bytes=a-` or `bytes=-n`, `416` with `Content-Range: bytes */<size>` for one
that starts past the end; a Range it does not take (another unit, several ranges, bad syntax)
is ignored and the whole image sent, as the RFC allows. Every request is recorded.

For the suites it can misbehave on command: serve a corrupted copy, or cut the connection at a
chosen byte of the image (once), as a lost cellular link does mid-download.

The suites serve HTTPS when the session made the CA the device trusts (`session_https`): on a
virtual rig whose broker speaks TLS on certificates made for the session, the device's
firmware carries that CA, so the server shows a certificate it issued. Elsewhere they serve
plain HTTP: nothing tells which CA a lab's device carries (`hil ota serve --tls-cert
--tls-key` serves HTTPS on the lab's own pair).
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hil.broker.tls import LOOPBACK_NAMES, BrokerPki
from hil.profile import HttpOtaContract
from hil.protocol.image import ImageError, parse_image

WRITE_PIECE = 4096  # the body goes out in pieces, so a cut can fall inside one response
SHUTDOWN_POLL_S = 0.05  # how soon stop() is heard (serve_forever's poll interval)
_RANGE = re.compile(r"\s*bytes\s*=\s*(?P<start>[0-9]*)\s*-\s*(?P<end>[0-9]*)\s*")


class ServeError(ValueError):
    """The file given cannot be served as an OTA image; the message names it and the fix."""


class Unsatisfiable(Exception):
    """A byte range that starts past the end of the image: 416."""


@dataclass(frozen=True)
class ServedRequest:
    """One request as the server answered it."""

    time: float  # time.time() when it arrived
    client: str
    method: str
    path: str
    range: str | None  # the Range header as the client sent it
    status: int
    start: int | None  # the first byte of the image in the body (None: not the image)
    length: int  # the body's Content-Length
    sent: int  # body bytes written before the response ended

    @property
    def complete(self) -> bool:
        return self.sent == self.length

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "complete": self.complete})

    def text(self) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(self.time))
        asked = f" [Range: {self.range}]" if self.range is not None else ""
        body = f"{self.sent} bytes" if self.complete else f"{self.sent}/{self.length} bytes, cut"
        return f"{when} {self.client} {self.method} {self.path}{asked} -> {self.status}, {body}"


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (start, stop) a Range header asks of `size` bytes; None to send them all.

    Raises Unsatisfiable for a range that starts at or past the end (or a zero suffix).
    """
    if header is None:
        return None
    m = _RANGE.fullmatch(header)
    if not m or not (m["start"] or m["end"]):
        return None  # not one byte range (another unit, a list, bad syntax): ignored
    if not m["start"]:  # bytes=-n: the last n bytes
        suffix = int(m["end"])
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - suffix), size
    start = int(m["start"])
    end = int(m["end"]) if m["end"] else None
    if end is not None and end < start:
        return None  # invalid: ignored
    if start >= size:
        raise Unsatisfiable
    return start, size if end is None else min(end, size - 1) + 1


def read_image(data: bytes, name: str) -> str:
    """The version `data` declares, after checking it is an app image the device can take."""
    try:
        info = parse_image(data)
    except ImageError as exc:
        raise ServeError(
            f"{name} is not an ESP32 app image ({exc}); serve an app .bin as ESP-IDF builds it"
        ) from None
    if not info.version:
        raise ServeError(
            f"{name} has no app descriptor (esp_app_desc_t), so /version would have nothing "
            "to say; build it with ESP-IDF's app description"
        )
    return info.version


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], owner: ImageServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS is negotiated here, in the connection's own thread, never in the accept loop."""
        tls = self.owner.tls
        if tls is not None:
            try:
                request = tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return  # a client that fails the handshake gets nothing
        super().finish_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are recorded as ServedRequest, not printed."""

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        asked = self.headers.get("Range")
        arrived = time.time()
        if path == owner.image_path:
            status, start, length, sent = self._image(asked, body)
        elif path == owner.version_path:
            text = (owner.version + "\n").encode()
            self._head(HTTPStatus.OK, len(text), "text/plain; charset=utf-8")
            status, start, length, sent = HTTPStatus.OK, None, len(text), 0
            if body:
                sent = self._write(text, len(text))
        else:
            text = f"no {path} here: {owner.image_path} and {owner.version_path}\n".encode()
            self._head(HTTPStatus.NOT_FOUND, len(text), "text/plain; charset=utf-8")
            status, start, length, sent = HTTPStatus.NOT_FOUND, None, len(text), 0
            if body:
                sent = self._write(text, len(text))
        if not body:
            sent = length  # a HEAD answer is complete without its body
        client = self.client_address[0]
        owner.record(
            ServedRequest(arrived, client, self.command, path, asked, status, start, length, sent)
        )

    def _image(self, asked: str | None, body: bool) -> tuple[int, int | None, int, int]:
        owner = self.server.owner
        data = owner.payload()
        size = len(data)
        try:
            chosen = byte_range(asked, size)
        except Unsatisfiable:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, None, 0, 0
        start, stop = chosen if chosen is not None else (0, size)
        status = HTTPStatus.OK if chosen is None else HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        if chosen is not None:
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        self._head(None, stop - start, "application/octet-stream")
        if not body:
            return status, start, stop - start, 0
        cut = owner.take_cut(start, stop)
        sent = self._write(data[start : cut if cut is not None else stop], stop - start)
        if cut is not None:
            self.close_connection = True
        return status, start, stop - start, sent

    def _head(self, status: HTTPStatus | None, length: int, kind: str) -> None:
        if status is not None:
            self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _write(self, data: bytes, length: int) -> int:
        """Write `data` (all of the body, or the part before a cut); the bytes that went out."""
        sent = 0
        try:
            for at in range(0, len(data), WRITE_PIECE):
                self.wfile.write(data[at : at + WRITE_PIECE])
                sent += len(data[at : at + WRITE_PIECE])
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client went away
        return sent


class ImageServer:
    """Serves one image until stopped; runs in its own threads. A context manager."""

    def __init__(
        self,
        image: bytes,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        on_request: Callable[[ServedRequest], None] | None = None,
        version_path: str = "/version",
        image_path: str = "/firmware.bin",
        name: str = "the image",
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.version_path = version_path
        self.image_path = image_path
        self._on_request = on_request
        self._lock = threading.Lock()
        self._requests: list[ServedRequest] = []
        self._image = image
        self._version = read_image(image, name)
        self._corrupt_at: int | None = None
        self._cut_at: int | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def for_profile(
        cls,
        image: bytes,
        contract: HttpOtaContract,
        *,
        tls: ssl.SSLContext | None = None,
        on_request: Callable[[ServedRequest], None] | None = None,
    ) -> ImageServer:
        """A server where the profile says the device finds it, with the profile's paths."""
        return cls(
            image,
            host=contract.server_host,
            port=contract.server_port,
            tls=tls,
            on_request=on_request,
            version_path=contract.version_path,
            image_path=contract.image_path,
        )

    # -- lifetime ----------------------------------------------------------------------------

    def start(self) -> str:
        """Listen and serve in the background; returns the base URL to give the device."""
        if self._server is not None:
            raise RuntimeError("the image server is already running")
        try:
            self._server = _Server((self.host, self.port), self)
        except OSError as exc:
            raise ServeError(
                f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}; choose "
                "another --host/--port (or profile http_ota.server_host/server_port)"
            ) from None
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(SHUTDOWN_POLL_S,),
            name="hil-ota-http",
            daemon=True,
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop listening and close the socket; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> ImageServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def image_url(self) -> str:
        return self.url + self.image_path

    # -- what it serves ----------------------------------------------------------------------

    @property
    def version(self) -> str:
        with self._lock:
            return self._version

    @property
    def size(self) -> int:
        with self._lock:
            return len(self._image)

    def serve(self, image: bytes, name: str = "the image") -> None:
        """Serve `image` from now on (and its version), intact and uncut."""
        version = read_image(image, name)
        with self._lock:
            self._image, self._version = image, version
            self._corrupt_at = self._cut_at = None

    def corrupt(self, at: int | None = None) -> int:
        """Serve a copy with the byte at `at` (default: the middle) inverted, the version
        unchanged, as a broken file behind a correct /version; returns the offset."""
        with self._lock:
            offset = len(self._image) // 2 if at is None else at
            if not 0 <= offset < len(self._image):
                raise ValueError(f"offset {offset} is outside the {len(self._image)}-byte image")
            self._corrupt_at = offset
            return offset

    def cut_at(self, offset: int) -> None:
        """Close the connection of the next image response that reaches byte `offset`, just
        before sending it (once): a download cut mid-way."""
        with self._lock:
            if not 0 < offset < len(self._image):
                raise ValueError(f"offset {offset} is not inside the {len(self._image)}-byte image")
            self._cut_at = offset

    def payload(self) -> bytes:
        with self._lock:
            if self._corrupt_at is None:
                return self._image
            data = bytearray(self._image)
            data[self._corrupt_at] ^= 0xFF
            return bytes(data)

    def take_cut(self, start: int, stop: int) -> int | None:
        """Where a response of bytes [start, stop) must stop, if the pending cut falls in it."""
        with self._lock:
            if self._cut_at is not None and start < self._cut_at < stop:
                cut, self._cut_at = self._cut_at, None
                return cut
            return None

    # -- what happened -----------------------------------------------------------------------

    def record(self, served: ServedRequest) -> None:
        with self._lock:
            self._requests.append(served)
        if self._on_request is not None:
            self._on_request(served)

    @property
    def requests(self) -> list[ServedRequest]:
        """Every request answered so far, in order."""
        with self._lock:
            return list(self._requests)

    def image_requests(self) -> Iterator[ServedRequest]:
        return (r for r in self.requests if r.path == self.image_path and r.method == "GET")


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server-side TLS context from PEM files; ServeError naming the file that is wrong."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise ServeError(f"no such file {exc.filename}; give --tls-cert and --tls-key") from None
    except ssl.SSLError as exc:
        raise ServeError(
            f"cannot use {cert} with {key} as a TLS certificate and key ({exc.reason}); both "
            "must be PEM and the key the certificate's"
        ) from None
    return context


def session_https(pki: BrokerPki | None, host: str) -> ssl.SSLContext | None:
    """The server's TLS when the session made the device's CA (`pki`) and the device reaches
    the server (`host`) by a name that CA's server certificate carries; else None (HTTP)."""
    if pki is None or host not in LOOPBACK_NAMES:
        return None
    return tls_context(str(pki.server.cert), str(pki.server.key))

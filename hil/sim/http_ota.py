"""The firmware's HTTP OTA (seed 003), through the modem's HTTP commands (modem_http.py).

Told a server's URL, it reads the version there and refuses one that is not newer than its
own (hil.protocol.http_ota.is_newer); else it downloads the image one flash sector at a time,
each a `Range: bytes=` request, keeping what it has: a block cut by the network is asked for
again from its first byte, and a download the link lost altogether continues from there once
the firmware is back online. The whole image is verified as the bootloader would before it is
handed back to be written. The faults switch on the named bugs.

An https:// server is reached through SSL context 0 (`AT+HTTPPARA="SSLCFG",0`), the one the
firmware set up for its broker (firmware.py, SETUP_SSL): the server must show a certificate the
CA the firmware carries signed, or the handshake fails (status 715) and the update with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hil.profile import DeviceProfile
from hil.protocol import http_ota
from hil.protocol.image import ImageError, parse_image
from hil.sim.atclient import AtError

log = logging.getLogger("hil.sim.firmware")

BLOCK = 4096  # one flash sector per range request
READ = 1024  # bytes per AT+HTTPREAD
OK, PARTIAL = 200, 206
SSL_CONTEXT = 0  # the AT+CSSLCFG context the firmware configures (firmware.py)
_ACTION = re.compile(r"\+HTTPACTION: (?P<method>\d+),(?P<status>\d+),(?P<length>\d+)")
_CONTENT_RANGE = re.compile(rb"(?im)^content-range:\s*bytes\s+(\d+)-(\d+)/(\d+)\s*$")

Command = Callable[..., Awaitable[list[str]]]


class BlockFailed(Exception):
    """One request did not bring its bytes; `status` is what the modem reported."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP status {status}")
        self.status = status


class Refused(Exception):
    """The update ends here; `reason` goes in the FAILED message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Download:
    url: str  # the image's URL
    offered: str
    total: int | None = None
    data: bytearray = field(default_factory=bytearray)


class HttpOta:
    """One boot's HTTP OTA client: `update(url)` from an OTA:URL message, `resume()` after the
    link came back. Both return the verified image to write, or None."""

    def __init__(
        self,
        profile: DeviceProfile,
        faults: set[str],
        cmd: Command,
        publish: Callable[[str], Awaitable[None]],
        say: Callable[[str], None],
        running: Callable[[], str],
    ) -> None:
        self._contract = profile.http_ota
        self._partition = profile.ota.partition_size
        self._retries = profile.firmware.max_retries
        self._retry_delay = profile.firmware.retry_delay_s
        self._faults = faults
        self._cmd = cmd
        self._publish = publish
        self._say = say
        self._running = running
        self._download: _Download | None = None

    def requested(self, payload: bytes) -> str | None:
        """The server URL an OTA:URL message names, or None for any other message."""
        if not self._contract.enabled:
            return None
        fields = http_ota.match(self._contract.url, payload.decode("utf-8", "replace"))
        return fields["url"].rstrip("/") if fields else None

    @property
    def pending(self) -> bool:
        """A download the link interrupted, to go on with once online again."""
        return self._download is not None

    async def update(self, url: str) -> bytes | None:
        self._download = None
        await self._publish(self._contract.checking)
        try:
            await self._start(url)
            offered = await self._version(url + self._contract.version_path)
            running = self._running()
            if "http_no_version_check" not in self._faults and not http_ota.is_newer(
                offered, running
            ):
                self._say(f"OTA: {offered} is not newer than {running}")
                await self._publish(
                    http_ota.fill(self._contract.refused, running=running, offered=offered)
                )
                await self._stop()
                return None
            self._say(f"OTA: downloading {offered} from {url}")
            self._download = _Download(url + self._contract.image_path, offered)
            return await self._fetch(interrupted=False)
        except Refused as exc:
            return await self._fail(exc.reason)

    async def resume(self) -> bytes | None:
        if self._download is None:
            return None
        try:
            await self._start(self._download.url)
            return await self._fetch(interrupted=True)
        except Refused as exc:
            return await self._fail(exc.reason)

    # -- steps ----------------------------------------------------------------------------------

    async def _start(self, url: str) -> None:
        """A fresh HTTP session for `url`: whatever a previous run or a lost link left goes
        first; for https:// it uses the firmware's SSL context."""
        await self._stop()
        await self._cmd("AT+HTTPINIT")
        if url.startswith("https://"):
            await self._cmd(f'AT+HTTPPARA="SSLCFG",{SSL_CONTEXT}')

    async def _stop(self) -> None:
        with contextlib.suppress(AtError):  # none was started
            await self._cmd("AT+HTTPTERM")

    async def _fail(self, reason: str) -> None:
        self._download = None
        self._say(f"OTA failed: {reason}")
        await self._publish(http_ota.fill(self._contract.failed, reason=reason))
        await self._stop()

    async def _version(self, url: str) -> str:
        try:
            body, _total = await self._get(url, None)
        except BlockFailed as exc:
            raise Refused(f"version_http_{exc.status}") from None
        version = body.decode("utf-8", "replace").strip()
        if not version or len(version) > 31 or any(c.isspace() for c in version):
            raise Refused("version")
        return version

    async def _fetch(self, *, interrupted: bool) -> bytes | None:
        download = self._download
        assert download is not None
        if interrupted and "http_no_resume" in self._faults:
            download.data.clear()  # the bug: starts over instead of going on
        failures = 0
        while download.total is None or len(download.data) < download.total:
            start = len(download.data)
            stop = start + BLOCK if download.total is None else min(start + BLOCK, download.total)
            try:
                block, total = await self._get(download.url, (start, stop))
            except BlockFailed as exc:
                if 400 <= exc.status < 500:
                    raise Refused(f"http_{exc.status}") from None
                failures += 1
                log.info("OTA block at %d failed (%s), attempt %d", start, exc, failures)
                if failures >= self._retries:
                    raise Refused("download") from None
                interrupted = True
                if "http_no_resume" in self._faults:
                    download.data.clear()
                await asyncio.sleep(self._retry_delay)
                continue
            if total > self._partition:
                raise Refused("size")
            if interrupted:
                await self._publish(http_ota.fill(self._contract.resumed, at=start))
                interrupted = False
            download.total = total
            download.data += block
            await self._publish(
                http_ota.fill(self._contract.downloading, received=len(download.data), total=total)
            )
        await self._stop()
        image = bytes(download.data)
        self._download = None
        if "http_no_verify" not in self._faults:
            try:
                parse_image(image)
            except ImageError as exc:
                log.info("OTA image refused: %s", exc)
                raise Refused("verify") from None
        self._say("OTA Complete")
        return image

    async def _get(self, url: str, span: tuple[int, int] | None) -> tuple[bytes, int]:
        """GET `url` (bytes [start, stop) of it); its body and the whole resource's size."""
        await self._cmd(f'AT+HTTPPARA="URL","{url}"')
        header = "" if span is None else f"Range: bytes={span[0]}-{span[1] - 1}"
        await self._cmd(f'AT+HTTPPARA="USERDATA","{header}"')
        answer = (await self._cmd("AT+HTTPACTION=0", wait_for="+HTTPACTION:"))[-1]
        m = _ACTION.fullmatch(answer)
        if not m:
            raise BlockFailed(0)
        status, length = int(m["status"]), int(m["length"])
        start = 0 if span is None else span[0]
        if status == PARTIAL and span is not None:
            total = await self._content_range(start)
        elif status == OK and start == 0:
            total = length  # the server sent it whole, Range or not
        else:
            raise BlockFailed(status)
        body = bytearray()
        for offset in range(0, length, READ):
            await self._cmd(
                f"AT+HTTPREAD={offset},{min(READ, length - offset)}",
                wait_for="+HTTPREAD: 0",
                received=body,
            )
        if len(body) != length:
            raise BlockFailed(status)
        return bytes(body), total

    async def _content_range(self, start: int) -> int:
        """The size the server's Content-Range gives, checked to start where we asked."""
        header = bytearray()
        await self._cmd("AT+HTTPHEAD", received=header)
        m = _CONTENT_RANGE.search(bytes(header))
        if not m or int(m[1]) != start:
            raise BlockFailed(PARTIAL)
        return int(m[3])

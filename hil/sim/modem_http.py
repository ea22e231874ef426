"""The emulated SIM7600's HTTP(S) client: `AT+HTTPINIT` … `AT+HTTPTERM`, over the cellular link.

Forms and answers follow SIMCom's SIM7500/SIM7600/SIM7800 Series HTTP AT Command Manual
(V1.00, 2018-10-12; its <statuscode> table, 601 "Network Error"), with the SIM7600G's
`DATA,` forms of the read answers as LilyGO's TinyGsmHttpsComm.h waits for them on that module
(`QUALCOMM_SIM7600G`) and as a SIM7600 session log shows them (`+HTTPHEAD: DATA,880`):

- `AT+HTTPINIT` → `OK` (ERROR while already started or without a data bearer);
  `AT+HTTPTERM` → `OK` (ERROR when not started).
- `AT+HTTPPARA="URL","http[s]://<host>[:<port>]/<path>"`, `"USERDATA","<Name>: <value>"` (one
  custom request header; "" clears it), `"CONNECTTO"`, `"RECVTO"`, `"RESPTO"` (seconds),
  `"ACCEPT"`, `"CONTENT"`, `"SSLCFG",<ssl_ctx>` → `OK`.
- `AT+HTTPACTION=<0 GET|2 HEAD>` → `OK`, then when the exchange is over
  `+HTTPACTION: <method>,<status>,<data_len>`: the server's status, or 601 (network error)
  when the server cannot be reached or closes the connection before the whole body.
- `AT+HTTPHEAD` → `+HTTPHEAD: DATA,<len>`, the response's header bytes, `OK`.
- `AT+HTTPREAD?` → `+HTTPREAD: LEN,<len>`, `OK`;
  `AT+HTTPREAD=<offset>,<size>` → `OK`, `+HTTPREAD: DATA,<n>`, n raw bytes, `+HTTPREAD: 0`.

HTTPS, as SIMCom's A7600 Series HTTP(S) Application Note (V1.00, 2020-06-19) gives it for the
same command set and LilyGO's TinyGsmHttpsComm.h sends it (`https_set_ssl_index`): an
https:// URL, and `"SSLCFG",<ssl_ctx>` naming the `AT+CSSLCFG` context the handshake uses
(optional: context 0 otherwise). The context's authmode decides whether the server's
certificate is checked against its "cacert" (hil.sim.tls). A failed handshake, a server the
CA did not sign among them, ends as `+HTTPACTION: <method>,715,0` ("Handshake failed"), a
context that wants a CA it does not name as 719 ("CA missed"), the note's §4.1 error codes
as LilyGO's users see them from SIM7600-family modules (LilyGo-Modem-Series issues 243, 530).

The module keeps the whole body of the last response for AT+HTTPREAD.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from hil.sim.at import AtSyntaxError, Command
from hil.sim.tls import CertificateNotSet, TlsSettings

log = logging.getLogger("hil.sim.modem")

GET, HEAD = 0, 2
NETWORK_ERROR = 601  # the manual's <statuscode> for a failed exchange
HANDSHAKE_FAILED = 715  # the A7600 note's <errcode>s for HTTPS
CA_MISSED = 719
SSL_CONTEXTS = range(10)  # AT+CSSLCFG's <ssl_ctx_index>, 0-9
USER_AGENT = "SIMCOM_MODULE"
RECVTO_S = 20  # AT+HTTPPARA="RECVTO" default
MIN_WAIT_S = 2.0  # the scaled receive timeout is never shorter than this
PARAMETERS = ("URL", "USERDATA", "CONNECTTO", "RECVTO", "RESPTO", "ACCEPT", "CONTENT", "SSLCFG")
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass
class HttpState:
    """AT+HTTPINIT's session: its parameters and the last response."""

    params: dict[str, int | str] = field(default_factory=dict)
    busy: bool = False
    header: bytes = b""
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    status: int
    header: bytes = b""
    body: bytes = b""


async def exchange(
    url: str, method: int, user_header: str, timeout: float, tls: TlsSettings | None = None
) -> Response:
    """One HTTP/1.1 request and its whole response, or the module's code for why not: 601
    when it cannot be had, 715 or 719 when an https:// URL's handshake (with `tls`) fails."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [
        f"{'HEAD' if method == HEAD else 'GET'} {target} HTTP/1.1",
        f"Host: {host}:{port}",
        f"User-Agent: {USER_AGENT}",
        "Accept: */*",
    ]
    if user_header:
        lines.append(user_header)
    request = ("\r\n".join([*lines, "Connection: close", "", ""])).encode("latin-1")
    context: ssl.SSLContext | None = None
    if parts.scheme == "https":
        settings = tls or TlsSettings()
        try:
            context = settings.context()
        except CertificateNotSet as exc:
            log.info("modem: HTTPS %s: %s", url, exc)
            return Response(CA_MISSED if settings.ca is None else HANDSHAKE_FAILED)
        except ssl.SSLError as exc:
            log.info("modem: HTTPS %s: %s", url, exc)
            return Response(HANDSHAKE_FAILED)
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=host if context else None
            )
            writer.write(request)
            await writer.drain()
            header = await reader.readuntil(b"\r\n\r\n")
            status, length = _status_and_length(header)
            body = b"" if method == HEAD else await reader.readexactly(length)
            return Response(status, header, body)
    except ssl.SSLError as exc:  # before OSError, of which it is one
        log.info("modem: HTTPS %s: handshake failed: %s", url, exc)
        return Response(HANDSHAKE_FAILED)
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
        log.info("modem: HTTP %s failed: %s", url, exc or type(exc).__name__)
        return Response(NETWORK_ERROR)
    finally:
        if writer is not None:
            writer.close()


def _status_and_length(header: bytes) -> tuple[int, int]:
    lines = header.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return status, int(value.strip())
    return status, 0


class HttpService:
    """The HTTP commands, mixed into `Sim7600`: it provides the answers (`_ok`, `_error`,
    `_send_line`, `_write`, `_uart`), the link (`_later`, `_urc`, `_generation`), its time
    scale, the data bearer's state (`net_open`, `pdp_active`) and its SSL contexts
    (`_tls_settings`)."""

    http: HttpState | None

    def _http_reset(self) -> None:
        self.http = None

    def _http_session(self) -> HttpState:
        if self.http is None:
            raise AtSyntaxError("HTTP service not started (AT+HTTPINIT)")
        return self.http

    def httpinit(self, cmd: Command) -> None:
        if self.http is not None or not (self.net_open or self.pdp_active):
            self._error("operation not allowed")
            return
        self.http = HttpState()
        self._ok()

    def httpterm(self, cmd: Command) -> None:
        if self.http is None:
            self._error("operation not allowed")
            return
        self.http = None
        self._ok()

    def httppara(self, cmd: Command) -> None:
        session = self._http_session()
        tag = str(cmd.arg(0, str)).upper()
        if tag not in PARAMETERS or len(cmd.args) < 2:
            raise AtSyntaxError(f"HTTPPARA {tag!r} unknown or without a value")
        value = cmd.args[1]
        if tag == "URL":
            url = urlsplit(str(value))
            if url.scheme not in DEFAULT_PORTS or not url.hostname:
                raise AtSyntaxError(f"URL {value!r}: not an http:// or https:// URL")
        if tag == "SSLCFG":  # a number, quoted or not (TinyGsmHttpsComm.h quotes it)
            context = str(value).strip()
            if not context.isdigit() or int(context) not in SSL_CONTEXTS:
                raise AtSyntaxError(f"SSLCFG {value!r}: an SSL context from 0 to 9")
            value = int(context)
        session.params[tag] = value
        self._ok()

    def httpaction(self, cmd: Command) -> None:
        session = self._http_session()
        method = int(cmd.arg(0, int))
        if method not in (GET, HEAD) or "URL" not in session.params or session.busy:
            raise AtSyntaxError("HTTPACTION: GET or HEAD of a URL, one at a time")
        url, header = str(session.params["URL"]), str(session.params.get("USERDATA", ""))
        recv_s = int(session.params.get("RECVTO", RECVTO_S))
        timeout = max(MIN_WAIT_S, recv_s * self._time_scale)
        # The context as it stands when the request goes, its files as they are in flash.
        tls = self._tls_settings(int(session.params.get("SSLCFG", 0)))
        session.busy = True
        self._ok()
        generation = self._generation

        async def fetch() -> None:
            response = await exchange(url, method, header, timeout, tls)
            session.busy = False
            session.header, session.body = response.header, response.body
            length = len(response.body) if method == GET else _length(response)
            self._urc(f"+HTTPACTION: {method},{response.status},{length}", generation)

        async def send() -> None:
            # The exchange runs beside the link's queue, so MQTT traffic does not wait for it.
            asyncio.get_running_loop().create_task(fetch())

        self._later(send)

    def httphead(self, cmd: Command) -> None:
        session = self._http_session()
        if not session.header:
            raise AtSyntaxError("HTTPHEAD: no response yet")
        self._send_line(f"+HTTPHEAD: DATA,{len(session.header)}")
        self._write(session.header + b"\r\n")
        self._ok()

    def httpread(self, cmd: Command) -> None:
        session = self._http_session()
        if cmd.query:
            self._send_line(f"+HTTPREAD: LEN,{len(session.body)}")
            self._ok()
            return
        offset, size = int(cmd.arg(0, int)), int(cmd.arg(1, int))
        if offset < 0 or size <= 0 or offset >= len(session.body):
            raise AtSyntaxError("HTTPREAD: offset or size outside the response body")
        data = session.body[offset : offset + size]
        # OK first, then the data block and its end, all before any held URC.
        self._send_line("OK")
        self._send_line(f"+HTTPREAD: DATA,{len(data)}")
        self._write(data)
        self._send_line("+HTTPREAD: 0")
        self._uart.hold(False)


def _length(response: Response) -> int:
    try:
        return _status_and_length(response.header)[1] if response.header else 0
    except (ValueError, IndexError):
        return 0


HTTP_HANDLERS = {
    "+HTTPINIT": HttpService.httpinit,
    "+HTTPTERM": HttpService.httpterm,
    "+HTTPPARA": HttpService.httppara,
    "+HTTPACTION": HttpService.httpaction,
    "+HTTPHEAD": HttpService.httphead,
    "+HTTPREAD": HttpService.httpread,
}

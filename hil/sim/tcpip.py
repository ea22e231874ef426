"""The twin's modem in its raw-TCP variant: SIM7000-style TCP/IP commands carrying bytes only.

For `[sim] transport = "raw-tcp"` (seed 004: MQTT framed by the firmware over a SIM7000's TCP
commands, because the module's own MQTT service hangs) the twin's modem keeps the SIM7600
twin's power, boot, registration and HTTP, drops its `AT+CMQTT…` service, and offers the
TCP/IP application toolkit in single-connection mode. Forms and answers are those of SIMCom's
SIM7000 Series AT Command Manual V1.03 (2018-05-08), chapter 8 "AT Commands for TCPIP
Application Toolkit", which it shares with the SIM800 Series AT Command Manual V1.09
(2015-08-03, chapter 8), and as TinyGSM's TinyGsmClientSIM7000.h parses them:

- `AT+CIPSHUT` → `SHUT OK`: closes the connection, deactivates the bearer (IP INITIAL).
- `AT+CIPMUX=0` → `OK` (single IP connection; this twin offers no multi-IP mode).
- `AT+CSTT="<apn>"[,"<user>","<password>"]` → `OK` in IP INITIAL (then IP START), else ERROR.
- `AT+CIICR` → `OK` in IP START when registered (then IP GPRSACT), else ERROR.
- `AT+CIFSR` → the local address alone, no OK (then IP STATUS); ERROR without a bearer.
- `AT+CIPSTATUS` → `OK`, then `STATE: <state>`.
- `AT+CIPSTART="TCP","<host>",<port>` (the port quoted or not) → `OK`, then `CONNECT OK`, or
  `STATE: <state>` and `CONNECT FAIL`, or `ALREADY CONNECT` while connected. Allowed in IP
  INITIAL (the module brings the bearer up itself), IP STATUS and after a close.
- `AT+CIPQSEND=<0|1>` → `OK`: 0 answers a send `SEND OK` once the server acknowledged it (a
  round trip), 1 `DATA ACCEPT:<length>` as soon as the module has the data.
- `AT+CIPSEND=<length>` → `>`, exactly <length> bytes (1 to 1460, `AT+CIPSEND?`), then the
  answer above, `SEND FAIL`, or ERROR when not connected. The fixed-length form is binary
  safe; the execution form's Ctrl-Z end could not carry MQTT frames, which may hold 0x1A.
- Incoming data, `AT+CIPRXGET=0` (default): pushed as it arrives, after `+IPD,<length>:` with
  `AT+CIPHEAD=1`. `AT+CIPRXGET=1`: kept; `+CIPRXGET: 1` says data came (once, until the next
  read); `AT+CIPRXGET=2,<n>` (1-1460) → `+CIPRXGET: 2,<read>,<left>`, the bytes, `OK`;
  `=3,<n>` (1-730) the same in hex; `=4` → `+CIPRXGET: 4,<left>`.
- `AT+CIPCLOSE` → `CLOSE OK` while connecting or connected, else ERROR.
- `CLOSED`, unsolicited, when the server closes the connection.

The socket to the broker is real, behind the same link model as the MQTT service (latency,
retransmissions). A modem losing power sends nothing: no FIN, no RST. Its socket stays open,
what arrives on it read by no one, until the server gives up on it and closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from hil.sim.at import AtSyntaxError, Command
from hil.sim.modem import IP_ADDRESS, Sim7600

log = logging.getLogger("hil.sim.modem")

MAX_SEND = 1460  # AT+CIPSEND?'s <size>
MAX_READ = 1460  # AT+CIPRXGET=2's <reqlength>
MAX_READ_HEX = 730  # AT+CIPRXGET=3's
READ_CHUNK = 65536

INITIAL, START, GPRSACT, STATUS = "IP INITIAL", "IP START", "IP GPRSACT", "IP STATUS"
CONNECTING, CONNECTED = "TCP CONNECTING", "CONNECT OK"
CLOSED_LOCALLY, CLOSED_REMOTELY = "IP CLOSE", "TCP CLOSED"
CAN_START = (INITIAL, STATUS, CLOSED_LOCALLY, CLOSED_REMOTELY)


class TcpConnection:
    """One TCP connection to the server: the socket, and bytes received but not yet read."""

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.received = bytearray()
        self.announced = False  # +CIPRXGET: 1 sent since the last read

    def close(self) -> None:
        """A graceful close (FIN), as AT+CIPCLOSE and AT+CIPSHUT do."""
        if self.reader_task is not None:
            self.reader_task.cancel()
        if self.writer is not None:
            self.writer.close()


class TcpModem(Sim7600):
    """The SIM7600 twin with SIM7000-style TCP/IP commands instead of its MQTT service.

    A power cut forgets the connection (`_reset`) without closing its socket: the socket's
    reader goes on taking what the server sends, to no one, and closes only after the server
    closed its side.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._sockets: set[TcpConnection] = set()  # open, whether the module knows them or not
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _reset(self) -> None:
        super()._reset()
        self.ip_state = INITIAL
        self.quick_send = False
        self.rx_manual = False
        self.ip_head = False
        self.tcp: TcpConnection | None = None

    def _handler(self, name: str) -> Callable[[Sim7600, Command], None] | None:
        if name in TCP_HANDLERS:
            return TCP_HANDLERS[name]  # type: ignore[return-value]
        if name.startswith("+CMQTT"):
            return None  # no MQTT service: the firmware frames MQTT itself
        return super()._handler(name)

    async def close(self) -> None:
        """Power down for good (the twin is stopping): every socket goes, held ones too."""
        await super().close()
        tasks = [tcp.reader_task for tcp in self._sockets if tcp.reader_task is not None]
        for tcp in list(self._sockets):
            tcp.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._sockets.clear()

    # -- answers ------------------------------------------------------------------------------

    def _final(self, line: str) -> None:
        """A final result other than OK: the line, then URCs may flow again."""
        self._send_line(line)
        self._uart.hold(False)

    def _drop(self) -> None:
        if self.tcp is not None:
            self.tcp.close()
            self._sockets.discard(self.tcp)
            self.tcp = None

    # -- bearer -------------------------------------------------------------------------------

    def cipshut(self, cmd: Command) -> None:
        self._drop()
        self.ip_state = INITIAL
        self.pdp_active = False
        self._final("SHUT OK")

    def cipmux(self, cmd: Command) -> None:
        if cmd.query:
            self._send_line("+CIPMUX: 0")
        elif cmd.arg(0, int) != 0:
            self._error("operation not supported")  # single IP connection only
            return
        self._ok()

    def cstt(self, cmd: Command) -> None:
        if cmd.query:
            self._send_line(f'+CSTT: "{self.pdp.get(1, "")}","",""')
            self._ok()
            return
        apn = str(cmd.arg(0, str))
        if self.ip_state != INITIAL:
            self._error()
            return
        self.pdp[1] = apn
        self.ip_state = START
        self._ok()

    def ciicr(self, cmd: Command) -> None:
        if self.ip_state != START or not self.registered:
            self._error()
            return
        self.ip_state = GPRSACT
        self.pdp_active = True
        self._ok()

    def cifsr(self, cmd: Command) -> None:
        if not self.pdp_active:
            self._error()
            return
        if self.ip_state == GPRSACT:
            self.ip_state = STATUS
        self._final(IP_ADDRESS)

    def cipstatus(self, cmd: Command) -> None:
        self._ok()
        self._send_line(f"STATE: {self.ip_state}")

    def cipqsend(self, cmd: Command) -> None:
        if cmd.query:
            self._send_line(f"+CIPQSEND: {int(self.quick_send)}")
        else:
            self.quick_send = _flag(cmd)
        self._ok()

    def ciphead(self, cmd: Command) -> None:
        if cmd.query:
            self._send_line(f"+CIPHEAD: {int(self.ip_head)}")
        else:
            self.ip_head = _flag(cmd)
        self._ok()

    # -- the connection -----------------------------------------------------------------------

    def cipstart(self, cmd: Command) -> None:
        kind = str(cmd.arg(0, str)).upper()
        host = str(cmd.arg(1, str))
        port_arg = cmd.args[2] if len(cmd.args) > 2 else None
        port = int(port_arg) if isinstance(port_arg, int) or str(port_arg).isdigit() else 0
        if kind != "TCP" or not host or not 0 < port < 65536:
            raise AtSyntaxError('CIPSTART takes "TCP",<host>,<port>')
        if self.ip_state in (CONNECTING, CONNECTED):
            self._ok()
            self._send_line("ALREADY CONNECT")
            return
        if self.ip_state not in CAN_START or not self.registered:
            self._error()
            return
        self.pdp_active = True
        self.ip_state = CONNECTING
        tcp = TcpConnection()
        self.tcp = tcp
        self._ok()
        generation = self._generation

        async def connect() -> None:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError as exc:
                log.info("modem: TCP connect to %s:%d failed: %s", host, port, exc)
                self._link.down.send(lambda: self._connected(tcp, generation, False))
                return
            if generation != self._generation or self.tcp is not tcp:
                writer.transport.abort()  # closed, or the power went, while connecting
                return
            tcp.writer = writer
            self._sockets.add(tcp)
            tcp.reader_task = asyncio.get_running_loop().create_task(
                self._receive(tcp, reader, generation)
            )
            self._link.down.send(lambda: self._connected(tcp, generation, True))

        self._later(connect)

    async def _connected(self, tcp: TcpConnection, generation: int, ok: bool) -> None:
        if generation != self._generation or self.tcp is not tcp:
            return
        if ok:
            self.ip_state = CONNECTED
            self._unsolicited(b"\r\nCONNECT OK\r\n")
            return
        self.tcp = None
        self.ip_state = CLOSED_REMOTELY
        self._unsolicited(f"\r\nSTATE: {self.ip_state}\r\n\r\nCONNECT FAIL\r\n".encode())

    async def _receive(
        self, tcp: TcpConnection, reader: asyncio.StreamReader, generation: int
    ) -> None:
        """Bring what the server sends across the link, then its close, after which the
        module closes its side too."""
        with contextlib.suppress(OSError):
            while data := await reader.read(READ_CHUNK):
                self._link.down.send(lambda data=data: self._arrived(tcp, generation, data))
        if tcp.writer is not None:
            tcp.writer.close()
        self._sockets.discard(tcp)
        self._link.down.send(lambda: self._closed_by_server(tcp, generation))

    def _current(self, tcp: TcpConnection, generation: int) -> bool:
        return generation == self._generation and self.powered and self.tcp is tcp

    async def _arrived(self, tcp: TcpConnection, generation: int, data: bytes) -> None:
        if not self._current(tcp, generation):
            return
        if not self.rx_manual:
            head = f"\r\n+IPD,{len(data)}:".encode() if self.ip_head else b""
            self._unsolicited(head + data)
            return
        tcp.received += data
        if not tcp.announced:
            tcp.announced = True
            self._unsolicited(b"\r\n+CIPRXGET: 1\r\n")

    async def _closed_by_server(self, tcp: TcpConnection, generation: int) -> None:
        if not self._current(tcp, generation):
            return
        self.tcp = None
        self.ip_state = CLOSED_REMOTELY
        self._unsolicited(b"\r\nCLOSED\r\n")

    def cipsend(self, cmd: Command) -> None:
        if cmd.query:
            self._send_line(f"+CIPSEND: {MAX_SEND}")
            self._ok()
            return
        if not cmd.args:
            raise AtSyntaxError("this twin sends fixed lengths only: AT+CIPSEND=<length>")
        size = int(cmd.arg(0, int))
        tcp = self.tcp
        if tcp is None or self.ip_state != CONNECTED:
            self._error()
            return
        if not 0 < size <= MAX_SEND:
            self._error("invalid parameter")
            return
        generation = self._generation

        def send(data: bytes) -> None:
            if self.quick_send:
                self._final(f"DATA ACCEPT:{len(data)}")

            async def deliver() -> None:
                current = self._current(tcp, generation) and tcp.writer is not None
                if current:
                    assert tcp.writer is not None
                    tcp.writer.write(data)
                if not self.quick_send:
                    result = "SEND OK" if current else "SEND FAIL"

                    async def acknowledged() -> None:
                        if generation == self._generation:
                            self._final(result)

                    self._link.down.send(acknowledged)

            self._later(deliver)

        self._prompt(size, send)

    def ciprxget(self, cmd: Command) -> None:
        if cmd.query:
            self._send_line(f"+CIPRXGET: {int(self.rx_manual)}")
            self._ok()
            return
        mode = int(cmd.arg(0, int))
        if mode in (0, 1):
            self.rx_manual = mode == 1
            self._ok()
            return
        tcp = self.tcp
        if mode not in (2, 3, 4) or not self.rx_manual:
            self._error()
            return
        waiting = tcp.received if tcp is not None else bytearray()
        if mode == 4:
            self._send_line(f"+CIPRXGET: 4,{len(waiting)}")
            self._ok()
            return
        limit = MAX_READ if mode == 2 else MAX_READ_HEX
        size = int(cmd.arg(1, int))
        if not 0 < size <= limit:
            self._error("invalid parameter")
            return
        data = bytes(waiting[:size])
        del waiting[:size]
        if tcp is not None:
            tcp.announced = False
        self._send_line(f"+CIPRXGET: {mode},{len(data)},{len(waiting)}")
        self._write(data if mode == 2 else data.hex().upper().encode())
        self._ok()

    def cipclose(self, cmd: Command) -> None:
        if self.ip_state not in (CONNECTING, CONNECTED):
            self._error()
            return
        self._drop()
        self.ip_state = CLOSED_LOCALLY
        self._final("CLOSE OK")


def _flag(cmd: Command) -> bool:
    value = cmd.arg(0, int)
    if value not in (0, 1):
        raise AtSyntaxError(f"{cmd.name} takes 0 or 1")
    return value == 1


TCP_HANDLERS: dict[str, Callable[[TcpModem, Command], None]] = {
    "+CIPSHUT": TcpModem.cipshut,
    "+CIPMUX": TcpModem.cipmux,
    "+CSTT": TcpModem.cstt,
    "+CIICR": TcpModem.ciicr,
    "+CIFSR": TcpModem.cifsr,
    "+CIPSTATUS": TcpModem.cipstatus,
    "+CIPQSEND": TcpModem.cipqsend,
    "+CIPHEAD": TcpModem.ciphead,
    "+CIPSTART": TcpModem.cipstart,
    "+CIPSEND": TcpModem.cipsend,
    "+CIPRXGET": TcpModem.ciprxget,
    "+CIPCLOSE": TcpModem.cipclose,
}

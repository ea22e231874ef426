"""The proxy: an asyncio server in its own thread, one broker connection per device connection.

It reads whole MQTT packets each way, records them, asks the fault plan what to do with each
and forwards them in order (a delayed packet is overtaken; a delay on everything keeps the
order). The device's CONNECT is read before the broker is dialled, so a refusal never reaches
the broker. TLS may end at the proxy on the device's side (`device_tls`: the server name the
device asked for and its certificate are recorded) and start again towards the broker
(`upstream_tls`), or either side may be plain TCP.

While blackholed nothing passes either way and nothing is closed: a side that closes then is
held open on the other until the blackhole ends or that side gives up too, as across a dead
radio link. A malformed packet closes its connection with one warning; the others go on.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import heapq
import itertools
import logging
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography import x509

from hil.broker import BrokerError
from hil.proxy.codec import (
    MalformedPacket,
    Packet,
    PacketType,
    connack,
    parse,
    read_frame,
    topic_matches,
    with_dup,
)
from hil.proxy.faults import ProxyFaults, Verdict
from hil.proxy.records import ConnectRecord, event_record, frame_record, to_json

log = logging.getLogger("hil.proxy")
T = TypeVar("T")

UPSTREAM_TIMEOUT_S = 10.0  # to reach the broker and finish its TLS handshake
CALL_TIMEOUT_S = 10.0  # for a fault to be applied on the proxy's loop
RECENT_QOS1 = 32  # QoS 1 PUBLISHes to the device kept per connection, for `redeliver`
SIDES = {"up": "device", "down": "broker"}  # the side each direction is read from


class ProxyError(BrokerError):
    """The proxy cannot serve: it cannot listen where the rig says."""


class ProxyTimeout(AssertionError):
    """The device did not connect through the proxy within the time given."""


@dataclass(frozen=True)
class OpenConnection:
    """A device connection the proxy holds now; whether each side is still open (not closed by
    its peer, nor by the proxy)."""

    connection: int
    peer: str
    client_id: str | None
    device_open: bool
    broker_open: bool


class _Outbox:
    """One direction's writer: packets leave when due, and the socket closes after the last."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._heap: list[tuple[float, int, bytes | None]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._ordered_due = 0.0  # packets without a delay of their own leave in order

    def put(self, data: bytes, delay_s: float, own_delay_s: float = 0.0) -> None:
        due = max(time.monotonic() + delay_s, self._ordered_due)
        if own_delay_s:
            due += own_delay_s
        else:
            self._ordered_due = due
        heapq.heappush(self._heap, (due, next(self._seq), data))
        self._wake.set()

    def close_after_queued(self) -> None:
        due = max([time.monotonic(), *(d for d, _, _ in self._heap)])
        heapq.heappush(self._heap, (due, next(self._seq), None))
        self._wake.set()

    async def run(self) -> None:
        """Write packets as they fall due; return once the socket is closed."""
        try:
            while True:
                if not self._heap:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                due, _, data = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
                    continue
                heapq.heappop(self._heap)
                if data is None:
                    return
                self.writer.write(data)
                await self.writer.drain()
        except (ConnectionError, OSError):
            return  # the peer is gone: its reader sees the same
        finally:
            self.writer.close()


class _Link:
    """One device connection and the broker connection made for it."""

    def __init__(
        self,
        proxy: MqttProxy,
        number: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.proxy = proxy
        self.number = number
        self.device = (reader, writer)
        self.broker: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.client_id: str | None = None
        self.level: int | None = None
        self.task = asyncio.current_task()
        self.eof = {"up": False, "down": False}
        self.closed_by: tuple[str, str] | None = None  # (side, why), the first to close
        self._changed = asyncio.Event()
        self._outboxes: dict[str, _Outbox] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._recent: collections.deque[Packet] = collections.deque(maxlen=RECENT_QOS1)
        self._down_state: dict[int, str] = {}  # QoS 1 to the device: packet id -> its fate
        self._absorb: collections.Counter[int] = collections.Counter()

    def info(self) -> OpenConnection:
        return OpenConnection(
            self.number,
            self.peer,
            self.client_id,
            not self.eof["up"] and not self.device[1].is_closing(),
            self.broker is not None and not self.eof["down"] and not self.broker[1].is_closing(),
        )

    async def run(self) -> None:
        sni, cert = self.proxy._tls_facts(self.device[1])
        self.proxy._event(self.number, "open", peer=self.peer, sni=sni, client_cert=cert)
        try:
            if await self._open(sni, cert):
                async with asyncio.TaskGroup() as group:
                    for coroutine in (
                        self._pump("up", self.device[0]),
                        self._pump("down", self.broker[0]),
                        self._outboxes["up"].run(),
                        self._outboxes["down"].run(),
                    ):
                        self._tasks.append(group.create_task(coroutine))
        except* _BadPacket as group:
            bad = group.exceptions[0]
            assert isinstance(bad, _BadPacket)
            log.warning(
                "proxy connection %d from %s (client %s): malformed packet from the %s: %s; "
                "closed it",
                self.number,
                self.peer,
                self.client_id or "?",
                bad.side,
                bad.problem,
            )
            self._close_by("proxy", f"malformed packet from the {bad.side}: {bad.problem}")
            self.proxy._event(self.number, "error", side=bad.side, problem=str(bad.problem))
        finally:
            self.abort()
            by, why = self.closed_by or ("proxy", "proxy stopped")
            self.proxy._event(self.number, "close", by=by, reason=why)

    async def _open(self, sni: str | None, cert: str | None) -> bool:
        """Read the CONNECT, refuse it or dial the broker; whether packets may flow now."""
        reader, writer = self.device
        frame = await _read(reader, "device")
        if frame is None:
            self._close_by("device", "closed before sending CONNECT")
            return False
        packet = _parse(*frame, None, "device")
        if packet.type is not PacketType.CONNECT:
            raise _BadPacket("device", f"the first packet is {packet.name}, not CONNECT")
        self.level = packet.fields["level"]
        self.client_id = packet.fields["client_id"]
        now = time.time()
        self.proxy._connect(ConnectRecord.of(packet, now, self.number, sni, cert))
        code = self.proxy.faults.take_refusal()
        if code is not None:
            self.proxy._frame(frame_record(now, self.number, "up", packet, fault="refused"))
            reply = connack(code, self.level)
            self.proxy._frame(
                frame_record(
                    time.time(),
                    self.number,
                    "down",
                    parse(reply[0], reply[2:], self.level),
                    fault="refusal",
                )
            )
            writer.write(reply)
            with contextlib.suppress(ConnectionError, OSError):
                await writer.drain()
            self._close_by("proxy", f"refused the CONNECT with return code {code}")
            return False
        try:
            self.broker = await asyncio.wait_for(self.proxy._dial(), UPSTREAM_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            problem = str(exc) or type(exc).__name__
            log.warning(
                "proxy connection %d (client %s): cannot reach the broker %s:%d (%s); closed "
                "the device's connection",
                self.number,
                self.client_id,
                *self.proxy.upstream,
                problem,
            )
            self.proxy._event(self.number, "error", side="broker", problem=problem)
            self._close_by("proxy", f"broker unreachable: {problem}")
            return False
        self._outboxes = {"up": _Outbox(self.broker[1]), "down": _Outbox(writer)}
        self._handle(packet, "up", now)
        return True

    async def _pump(self, direction: str, reader: asyncio.StreamReader) -> None:
        side = SIDES[direction]
        while (frame := await _read(reader, side)) is not None:
            self._handle(_parse(*frame, self.level, side), direction, time.time())
        self.eof[direction] = True
        self._changed.set()
        self._close_by(side, "closed its connection")
        while self.proxy.faults.blackholed and not self.eof[_other(direction)]:
            self._changed.clear()  # no await between this and the wait: no change is missed
            await self._changed.wait()
        self._outboxes[direction].close_after_queued()

    def _handle(self, packet: Packet, direction: str, when: float) -> None:
        """Record one packet and send it on as the fault plan says."""
        verdict = self.proxy.faults.verdict(packet, direction)
        if not verdict.drop and packet.type is PacketType.PUBACK and direction == "up":
            verdict = self._puback_up(packet.fields["packet_id"], verdict)
        if packet.type is PacketType.PUBLISH and direction == "down" and packet.fields["qos"]:
            self._publish_down(packet, verdict)
        self.proxy._frame(
            frame_record(
                when,
                self.number,
                direction,
                packet,
                fault=verdict.fault,
                delay_s=verdict.delay_s or None,
            )
        )
        if not verdict.drop:
            self._outboxes[direction].put(packet.raw, self.proxy.faults.delay_s, verdict.delay_s)
        elif verdict.acknowledge and packet.fields["qos"] == 1:  # only PUBLISHes are lost so
            self._acknowledge_lost(packet, _other(direction))

    def _acknowledge_lost(self, packet: Packet, towards: str) -> None:
        """Send the PUBACK for a dropped QoS 1 PUBLISH back to its sender, and record it."""
        ack = bytes([PacketType.PUBACK << 4, 2]) + packet.fields["packet_id"].to_bytes(2, "big")
        self._outboxes[towards].put(ack, self.proxy.faults.delay_s)
        record = parse(ack[0], ack[2:], self.level)
        self.proxy._frame(frame_record(time.time(), self.number, towards, record, fault="loss"))

    def _publish_down(self, packet: Packet, verdict: Verdict) -> None:
        packet_id = packet.fields["packet_id"]
        self._recent.append(packet)
        self._down_state[packet_id] = "dropped" if verdict.drop else "unacked"
        self._absorb.pop(packet_id, None)

    def _puback_up(self, packet_id: int, verdict: Verdict) -> Verdict:
        """The device's PUBACK for a copy the proxy redelivered is not the broker's business."""
        if self._down_state.get(packet_id) == "unacked":
            self._down_state[packet_id] = "acked"
        elif self._absorb[packet_id] > 0:
            self._absorb[packet_id] -= 1
            return Verdict(drop=True, fault="absorbed")
        return verdict

    def redeliver(self, topic: str | None) -> Packet | None:
        """Send the last QoS 1 PUBLISH to the device (on `topic`) again, with DUP set."""
        if "down" not in self._outboxes or self.eof["down"]:
            return None
        for packet in reversed(self._recent):
            if topic is None or topic_matches(topic, packet.fields["topic"]):
                break
        else:
            return None
        packet_id = packet.fields["packet_id"]
        if self._down_state.get(packet_id) == "dropped":
            self._down_state[packet_id] = "unacked"  # the device sees it for the first time
        else:
            self._absorb[packet_id] += 1
        copy = with_dup(packet)
        self._outboxes["down"].put(copy, self.proxy.faults.delay_s)
        again = parse(copy[0], packet.body, self.level)
        self.proxy._frame(frame_record(time.time(), self.number, "down", again, fault="redeliver"))
        return again

    def notify(self) -> None:
        self._changed.set()

    def abort(self, by: str | None = None, why: str | None = None) -> None:
        """Close both sockets at once, unflushed, as a network that drops the connection."""
        if by and why:
            self._close_by(by, why)
        for _, writer in filter(None, (self.device, self.broker)):
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()

    def _close_by(self, side: str, why: str) -> None:
        if self.closed_by is None:
            self.closed_by = (side, why)


class _BadPacket(Exception):
    """A malformed packet, and the side that sent it."""

    def __init__(self, side: str, problem: MalformedPacket | str) -> None:
        super().__init__(side, problem)
        self.side = side
        self.problem = problem


async def _read(reader: asyncio.StreamReader, side: str) -> tuple[int, bytes] | None:
    """The next packet from `side`; None when it closed (or reset) its connection."""
    try:
        return await read_frame(reader)
    except MalformedPacket as exc:
        raise _BadPacket(side, exc) from None
    except (ConnectionError, OSError):
        return None


def _parse(header: int, body: bytes, level: int | None, side: str) -> Packet:
    try:
        return parse(header, body, level)
    except MalformedPacket as exc:
        raise _BadPacket(side, exc) from None


def _other(direction: str) -> str:
    return "down" if direction == "up" else "up"


class MqttProxy:
    """Between the device and `upstream` (the broker's host and port); see the module doc.

    `start()` returns where the device must connect. Records (`connects`, `frames`, `events`)
    and faults may be used from any thread; `sink` gets one JSON line per packet and event.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        upstream_tls: ssl.SSLContext | None = None,
        device_tls: ssl.SSLContext | None = None,
        sink: Callable[[str], None] | None = None,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        upstream_hostname: str | None = None,
    ) -> None:
        self.upstream = upstream
        self.upstream_tls = upstream_tls
        self.upstream_hostname = upstream_hostname or upstream[0]
        self.device_tls = device_tls
        self.sink = sink
        self.listen = listen
        self.faults = ProxyFaults()
        self.endpoint: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._connects: list[ConnectRecord] = []
        self._frames: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        self._listeners: list[Callable[[], None]] = []
        self._links: dict[int, _Link] = {}
        self._numbers = itertools.count(1)
        self._server_names: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        if device_tls is not None:
            self._remember_server_names(device_tls)

    # -- life

    def start(self) -> tuple[str, int]:
        """Listen, and return the (host, port) to give the device."""
        if self._thread is not None:
            raise RuntimeError("the proxy is already running")
        self._loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[tuple[str, int]] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="hil-proxy", daemon=True
        )
        self._thread.start()
        try:
            self.endpoint = ready.result(timeout=CALL_TIMEOUT_S)
        except BaseException:
            self._thread.join()
            self._thread = self._loop = None
            raise
        log.info("MQTT proxy on %s:%d for %s:%d", *self.endpoint, *self.upstream)
        return self.endpoint

    def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=CALL_TIMEOUT_S)
        self._thread = self._loop = None

    def _run(self, ready: concurrent.futures.Future[tuple[str, int]]) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        host, port = self.listen
        try:
            server = loop.run_until_complete(
                asyncio.start_server(self._serve, host, port, ssl=self.device_tls)
            )
        except OSError as exc:
            ready.set_exception(
                ProxyError(
                    f"the MQTT proxy cannot listen on {host}:{port} ({exc.strerror or exc}); "
                    "set [broker] proxy_listen to a free address of this machine"
                )
            )
            loop.close()
            return
        ready.set_result(server.sockets[0].getsockname()[:2])
        try:
            loop.run_forever()
        finally:
            server.close()
            links = list(self._links.values())
            for link in links:
                link.abort("proxy", "proxy stopped")
            tasks = [link.task for link in links if link.task is not None]
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=CALL_TIMEOUT_S))
            loop.run_until_complete(server.wait_closed())
            loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(self, next(self._numbers), reader, writer)
        with self._lock:
            self._links[link.number] = link
        try:
            await link.run()
        finally:
            with self._lock:
                del self._links[link.number]

    async def _dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = self.upstream
        if self.upstream_tls is None:
            return await asyncio.open_connection(host, port)
        return await asyncio.open_connection(
            host, port, ssl=self.upstream_tls, server_hostname=self.upstream_hostname
        )

    def _remember_server_names(self, context: ssl.SSLContext) -> None:
        """Wrap the context's SNI callback so each handshake's server name is kept."""
        previous = context.sni_callback

        def remember(connection: Any, name: str | None, ctx: ssl.SSLContext) -> int | None:
            if name is not None:
                self._server_names[connection] = name
            return previous(connection, name, ctx) if previous else None

        context.sni_callback = remember

    def _tls_facts(self, writer: asyncio.StreamWriter) -> tuple[str | None, str | None]:
        """The server name the device asked for and its certificate's subject, if TLS ended here."""
        connection = writer.get_extra_info("ssl_object")
        if connection is None:
            return None, None
        der = connection.getpeercert(binary_form=True)
        subject = x509.load_der_x509_certificate(der).subject.rfc4514_string() if der else None
        return self._server_names.get(connection), subject

    # -- records

    @property
    def connects(self) -> list[ConnectRecord]:
        with self._lock:
            return list(self._connects)

    @property
    def frames(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._frames)

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)

    @property
    def connections(self) -> list[OpenConnection]:
        """The device connections open now (a blackholed one stays here until it closes)."""
        if self._loop is None:
            return []
        return self._on_loop(self._connections)

    async def _connections(self) -> list[OpenConnection]:
        with self._lock:
            links = list(self._links.values())
        return [link.info() for link in links]

    def set_sink(self, sink: Callable[[str], None] | None) -> None:
        """Send every record to `sink` from now on, those made so far first (in time order)."""
        with self._lock:
            self.sink = sink
            past = sorted([*self._frames, *self._events], key=lambda r: r["time"])
            if sink is not None:
                for record in past:
                    sink(to_json(record) + "\n")

    def _connect(self, record: ConnectRecord) -> None:
        with self._lock:
            self._connects.append(record)
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def _frame(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._frames.append(record)
            if self.sink:
                self.sink(to_json(record) + "\n")

    def _event(self, connection: int, event: str, **details: Any) -> None:
        record = event_record(time.time(), connection, event, **details)
        with self._lock:
            self._events.append(record)
            if self.sink:
                self.sink(to_json(record) + "\n")

    async def wait_connect(self, timeout: float, since: int | None = None) -> ConnectRecord:
        """The first CONNECT at index `since` of `connects` or later (default: the next one)."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def listener() -> None:
            loop.call_soon_threadsafe(changed.set)

        with self._lock:
            start = len(self._connects) if since is None else since
            self._listeners.append(listener)
        deadline = loop.time() + timeout
        try:
            while True:
                changed.clear()
                with self._lock:
                    if len(self._connects) > start:
                        return self._connects[start]
                left = deadline - loop.time()
                if left <= 0:
                    raise ProxyTimeout(
                        f"no CONNECT through the proxy within {timeout:g} s (since CONNECT "
                        f"#{start}; {len(self.events)} connection events so far)"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), left)
        finally:
            with self._lock:
                self._listeners.remove(listener)

    # -- faults

    def drop(self) -> int:
        """Close every device connection (and its broker connection) now; how many."""
        return self._on_loop(self._drop)

    async def _drop(self) -> int:
        links = list(self._links.values())
        for link in links:
            link.abort("proxy", "dropped (fault)")
        return len(links)

    def blackhole(self, on: bool = True) -> None:
        """Stop forwarding both ways without closing anything (`False` forwards again)."""
        self.faults.blackhole(on)
        self._notify_links()

    def delay(self, seconds: float) -> None:
        """Hold every packet `seconds` before it is forwarded, keeping their order."""
        self.faults.delay(seconds)

    def drop_publish(self, topic: str | None = None, direction: str = "up", count: int = 1) -> None:
        """Drop the next `count` PUBLISHes going `direction` (on `topic`, wildcards allowed)."""
        self.faults.drop_publish(topic, direction, count)

    def delay_publish(
        self, seconds: float, topic: str | None = None, direction: str = "up", count: int = 1
    ) -> None:
        """Hold the next `count` PUBLISHes going `direction` `seconds`; others overtake them."""
        self.faults.delay_publish(seconds, topic, direction, count)

    def drop_publish_rate(
        self,
        rate: float,
        topic: str | None = None,
        direction: str = "down",
        seed: int | None = None,
        acknowledge: bool = False,
    ) -> None:
        """A lossy link: drop each PUBLISH going `direction` (on `topic`) with probability
        `rate` until cleared (rate 0 ends it; with no topic, every loss going `direction`); a
        `seed` makes the losses repeat run to run.

        With `acknowledge` the proxy answers a dropped QoS 1 PUBLISH with the PUBACK its
        receiver would have sent, as a modem that acknowledged a message and lost it before
        its host read it: the loss is the receiver's alone. Without it the sender holds every
        lost message unacknowledged for the rest of the session (pushing OTA chunks to the
        twin at 5 % loss, mosquitto stopped delivering to it within a few hundred)."""
        self.faults.drop_publish_rate(rate, topic, direction, seed, acknowledge)

    def drop_puback(self, direction: str = "up", count: int = 1) -> None:
        self.faults.drop_puback(direction, count)

    def delay_puback(self, seconds: float, direction: str = "up", count: int = 1) -> None:
        self.faults.delay_puback(seconds, direction, count)

    def refuse_connects(self, count: int, return_code: int) -> None:
        """Answer the next `count` CONNECTs with CONNACK `return_code` and close them."""
        self.faults.refuse_connects(count, return_code)

    def redeliver(self, topic: str | None = None) -> int:
        """Send the last QoS 1 PUBLISH to the device (on `topic`) again with DUP=1, on every
        connection that had one; how many were sent. The device's PUBACK for the copy is not
        passed to the broker, which had its answer already."""
        sent = self._on_loop(self._redeliver, topic)
        if not sent:
            on = f" on {topic!r}" if topic else ""
            raise LookupError(f"no QoS 1 PUBLISH{on} has gone to the device on an open connection")
        return sent

    async def _redeliver(self, topic: str | None) -> int:
        return sum(link.redeliver(topic) is not None for link in list(self._links.values()))

    def clear(self) -> None:
        """Undo every fault: forward everything as it comes."""
        self.faults.clear()
        self._notify_links()

    def _notify_links(self) -> None:
        if self._loop is not None:
            self._on_loop(self._notify)

    async def _notify(self) -> None:
        for link in list(self._links.values()):
            link.notify()

    def _on_loop(self, function: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run `function` on the proxy's loop and wait for its result."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the proxy is not running: start() it first")
        future = asyncio.run_coroutine_threadsafe(function(*args), loop)
        return future.result(timeout=CALL_TIMEOUT_S)

"""`python -m hil.bench` (`nox -s bench`): OTA throughput on the twin against the UART's ceiling.

A measurement, not a test: it pushes one image with each window at each cellular round trip,
and with the sized window again while the MQTT proxy in front of the broker drops a share of
the chunk PUBLISHes on their way to the device, and prints the figures next to the ceiling, so
a change to the sender (or the firmware) shows up as a number. The ceiling is measured in the
same run, on a twin with no link latency and a full window, because that is what the UART
carries on this machine while the other twins run; the 115200-baud arithmetic is printed beside
it. One twin per round trip, all running at once; the pushes at one round trip run one after
the other on the same twin.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hil.cli.ota import KB, Refusal, deliver, device_version, rig_dut, rig_up
from hil.mqtt import MqttRecorder, MqttTimeout
from hil.ota import OtaError
from hil.ota.window import AUTO, MAX_WINDOW, Window
from hil.profile import DeviceProfile
from hil.protocol import ota
from hil.protocol.image import build_image
from hil.proxy import MqttProxy
from hil.proxy.options import ProxyOptions
from hil.rig import DEFAULT_RIG, Rig, load_rig
from hil.schema import ConfigError
from hil.session import RigSession
from hil.sim.twin import UART_BAUD
from hil.sim.uart import BITS_PER_BYTE

QUICK = {"rtt": [50.0], "size": 16384, "loss": 0.0}
CEILING_RTT_MS = 0.0


@dataclass(frozen=True)
class Target:
    """What the sized window must reach at a round trip and loss, of the measured ceiling."""

    rtt_ms: float
    loss: float
    fraction: float

    def describe(self) -> str:
        lossy = f" with {self.loss:.0%} of the chunks lost" if self.loss else ""
        return f"at {self.rtt_ms:g} ms{lossy}, window {AUTO}"


TARGETS = [Target(300.0, 0.0, 0.95), Target(600.0, 0.0, 0.90), Target(600.0, 0.05, 0.75)]


# -- the ceiling ---------------------------------------------------------------------------


def _line(text: str) -> bytes:
    """A result line as the modem frames it (hil/sim/modem.py Sim7600._send_line)."""
    return b"\r\n" + text.encode() + b"\r\n"


def rx_block(topic: str, payload: bytes, client: int = 0) -> bytes:
    """One incoming message as the modem puts it on the UART (hil/sim/modem.py Sim7600._rx)."""
    t = topic.encode()
    return (
        f"\r\n+CMQTTRXSTART: {client},{len(t)},{len(payload)}\r\n"
        f"+CMQTTRXTOPIC: {client},{len(t)}\r\n".encode()
        + t
        + f"\r\n+CMQTTRXPAYLOAD: {client},{len(payload)}\r\n".encode()
        + payload
        + f"\r\n+CMQTTRXEND: {client}\r\n".encode()
    )


def publish_commands(topic: str, payload: str, qos: int, client: int = 0) -> bytes:
    """What the firmware sends the modem to publish (ESP32 to modem; hil/sim/firmware.py)."""
    t, p = topic.encode(), payload.encode()
    return (
        f"AT+CMQTTTOPIC={client},{len(t)}\r".encode()
        + t
        + f"AT+CMQTTPAYLOAD={client},{len(p)}\r".encode()
        + p
        + f"AT+CMQTTPUB={client},{qos},60\r".encode()
    )


def publish_answers(client: int = 0) -> bytes:
    """What that publish draws back from the modem, on the same direction as the chunks:
    `>` and OK for the topic, `>` and OK for the payload, OK and +CMQTTPUB for the publish."""
    prompt = b"\r\n>"
    ok = _line("OK")
    return prompt + ok + prompt + ok + ok + _line(f"+CMQTTPUB: {client},0")


@dataclass(frozen=True)
class Ceiling:
    """Image bytes per second the UART can carry at best, and how it was reached."""

    data_size: int
    chunk_bytes: int  # modem to ESP32, the chunk itself
    answer_bytes: int  # modem to ESP32, the answers to the device's PROGRESS publish
    publish_bytes: int  # ESP32 to modem, the PROGRESS publish
    baud: int

    def rate(self, with_answers: bool = True) -> float:
        wire = self.chunk_bytes + (self.answer_bytes if with_answers else 0)
        return self.data_size * self.baud / (wire * BITS_PER_BYTE)

    @property
    def chunk_seconds(self) -> float:
        """UART time per chunk, with the answers its PROGRESS draws."""
        return (self.chunk_bytes + self.answer_bytes) * BITS_PER_BYTE / self.baud

    def explain(self) -> list[str]:
        per_chunk = self.chunk_bytes + self.answer_bytes
        encoded = len(ota.encode_chunk(0, bytes(self.data_size)))
        return [
            f"UART ceiling ({self.baud} baud, 8N1 = {BITS_PER_BYTE} bits per byte):",
            f"  a chunk carries {self.data_size} image bytes + a 4-byte number = "
            f"{self.data_size + 4} bytes, {encoded} in base64",
            f"  modem -> ESP32, the +CMQTTRXSTART/RXTOPIC/topic/RXPAYLOAD/payload/RXEND "
            f"block: {self.chunk_bytes} bytes",
            f"  modem -> ESP32, the '>' prompts, OKs and +CMQTTPUB result the device's "
            f"OTA:PROGRESS publish draws: {self.answer_bytes} bytes",
            f"  ESP32 -> modem, the PROGRESS publish itself (AT+CMQTTTOPIC/PAYLOAD/PUB): "
            f"{self.publish_bytes} bytes; the UART is full duplex, so it does not compete",
            f"  = {per_chunk} bytes = {per_chunk * BITS_PER_BYTE} bits = "
            f"{self.chunk_seconds * 1000:.2f} ms per chunk -> ceiling "
            f"{self.rate() / KB:.2f} kB/s of image "
            f"({self.rate(False) / KB:.2f} kB/s counting the chunk block alone)",
            f"  not counted: the firmware's periodic AT health check ({len(_line('OK'))} bytes "
            "of answer per check) and heartbeats, well under 1 %",
        ]


def uart_ceiling(profile: DeviceProfile, image_size: int) -> Ceiling:
    data_size = profile.ota.chunk_data_size
    total = ota.chunk_count(image_size, data_size)
    chunk = ota.encode_chunk(total - 1, bytes(data_size)).encode()
    status = profile.mqtt.status_topic
    return Ceiling(
        data_size=data_size,
        chunk_bytes=len(rx_block(profile.mqtt.firmware_topic, chunk)),
        answer_bytes=len(publish_answers()),
        publish_bytes=len(
            publish_commands(status, ota.progress(total - 1, total), profile.mqtt.qos)
        ),
        baud=UART_BAUD,
    )


# -- the runs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Push:
    """One push to make: with which window, losing which share of the chunks."""

    window: Window
    loss: float = 0.0


@dataclass(frozen=True)
class Run:
    rtt_ms: float
    window: Window
    loss: float
    size: int
    chunks: int
    seconds: float
    retransmissions: int
    peak_window: int
    failed: str | None = None  # why the push did not complete

    @property
    def throughput(self) -> float:
        return 0.0 if self.failed else self.size / self.seconds


def with_rtt(rig: Rig, rtt_ms: float) -> Rig:
    """The rig with its twin at `rtt_ms`, under a name of its own, with a fresh flash, behind
    the MQTT proxy.

    The twins run side by side, each with its own ports; the rig lock is keyed by the rig's
    path, so each gets its own path or the second would find the rig taken by the first, and
    one twin holds a flash file's lock, so none keeps the rig's `[sim] flash`. Every push goes
    through the proxy, the ceiling's too, so the lossy pushes differ from the others only in
    what it drops.
    """
    if rig.sim is None:
        raise Refusal(f"rig {rig.path} has no [sim] table: the benchmark runs on the twin")
    return dataclasses.replace(
        rig,
        path=rig.path.with_name(f"{rig.path.stem}.rtt{rtt_ms:g}{rig.path.suffix}"),
        sim=dataclasses.replace(rig.sim, rtt_ms=rtt_ms, flash=None),
        proxy=rig.proxy or ProxyOptions(),
    )


@contextlib.contextmanager
def losing(proxy: MqttProxy | None, topic: str, loss: float, seed: int) -> Iterator[None]:
    """The proxy drops each PUBLISH on `topic` towards the device with probability `loss`."""
    if not loss:
        yield
        return
    assert proxy is not None
    proxy.drop_publish_rate(loss, topic, direction="down", seed=seed, acknowledge=True)
    try:
        yield
    finally:
        proxy.drop_publish_rate(0)


async def runs_at(session: RigSession, rtt_ms: float, pushes: list[Push], size: int) -> list[Run]:
    """Push a same-size image once per entry of `pushes` on one twin, waiting for each reboot."""
    assert session.endpoint is not None and session.console is not None
    profile = session.rig.profile
    runs = []
    async with MqttRecorder(session.endpoint, [profile.mqtt.status_topic]) as mqtt:
        dut = rig_dut(session, mqtt)
        await device_version(dut)
        for number, push in enumerate(pushes):
            image = build_image(f"bench-{rtt_ms:g}-{number}-w{push.window}", size)
            lossy = f", {push.loss:.0%} lost" if push.loss else ""
            try:
                with losing(session.proxy, profile.mqtt.firmware_topic, push.loss, seed=number):
                    r = (await deliver(dut, image, window=push.window)).result
            except (OtaError, MqttTimeout) as exc:
                print(f"  rtt {rtt_ms:g} ms, window {push.window}{lossy}: {exc}", file=sys.stderr)
                runs.append(Run(rtt_ms, push.window, push.loss, size, 0, 0.0, 0, 0, str(exc)))
                continue
            runs.append(
                Run(
                    rtt_ms,
                    push.window,
                    push.loss,
                    r.size,
                    r.chunks,
                    r.seconds,
                    r.retransmissions,
                    r.peak_window,
                )
            )
            print(
                f"  rtt {rtt_ms:g} ms, window {push.window}{lossy}: {r.seconds:.1f} s",
                file=sys.stderr,
            )
    return runs


async def run_all(
    sessions: dict[float, RigSession], plans: dict[float, list[Push]], size: int
) -> list[Run]:
    results = await asyncio.gather(
        *(runs_at(session, rtt, plans[rtt], size) for rtt, session in sessions.items())
    )
    return [run for runs in results for run in runs]


def plan(rtts: list[float], windows: list[Window], loss: float = 0.0) -> dict[float, list[Push]]:
    """The pushes at each round trip, and the ceiling's push at none."""
    pushes = [Push(window) for window in windows]
    if loss:
        pushes.append(Push(AUTO, loss))
    plans = {rtt: list(pushes) for rtt in rtts}
    plans.setdefault(CEILING_RTT_MS, []).insert(0, Push(MAX_WINDOW))
    return plans


def measured_ceiling(runs: list[Run]) -> Run:
    ceiling = next(r for r in runs if r.rtt_ms == CEILING_RTT_MS and r.window == MAX_WINDOW)
    if ceiling.failed:
        raise Refusal(
            f"the ceiling's push failed, so there is nothing to compare: {ceiling.failed}"
        )
    return ceiling


# -- the report ----------------------------------------------------------------------------


def table(runs: list[Run], uart: Ceiling) -> list[str]:
    ceiling = measured_ceiling(runs)
    base = {r.rtt_ms: r for r in runs if r.window == 1 and not r.loss}
    lines = [
        f"{'rtt ms':>7} {'window':>6} {'loss':>4} {'seconds':>8} {'ms/chunk':>8} {'kB/s':>6} "
        f"{'of ceiling':>10} {'of UART':>7} {'vs window 1':>11} {'peak':>4} {'retx':>4}",
    ]
    for r in sorted(runs, key=_order):
        if r.failed:
            lines.append(f"{r.rtt_ms:>7g} {r.window!s:>6} {r.loss:>4.0%} failed: {r.failed}")
            continue
        one = base.get(r.rtt_ms)
        speedup = f"{one.seconds / r.seconds:.2f}x" if one and not one.failed else "-"
        lines.append(
            f"{r.rtt_ms:>7g} {r.window!s:>6} {r.loss:>4.0%} {r.seconds:>8.1f} "
            f"{r.seconds / r.chunks * 1000:>8.1f} {r.throughput / KB:>6.2f} "
            f"{r.throughput / ceiling.throughput:>10.0%} {r.throughput / uart.rate():>7.0%} "
            f"{speedup:>11} {r.peak_window:>4} {r.retransmissions:>4}"
        )
    return lines


def _order(run: Run) -> tuple[float, float, int]:
    return (run.rtt_ms, run.loss, MAX_WINDOW + 1 if run.window == AUTO else int(run.window))


@dataclass(frozen=True)
class LossBound:
    """The most of the ceiling any sender can reach with a loss, as the device writes in order.

    Every chunk that arrives after a lost one is discarded, until the resent one arrives: at
    least one chunk round trip (window 1's time per chunk) in which the device writes nothing,
    counted in the ceiling's time per chunk.
    """

    stall: float  # chunk times a lost chunk idles the device, at least
    lost: float  # chunks lost per chunk written: a resent chunk may be lost again

    @property
    def fraction(self) -> float:
        return 1 / (1 + self.lost * self.stall)

    def explain(self) -> str:
        return (
            f"the device writes in order, so no sender passes ~{self.fraction:.0%} here: a chunk "
            f"round trip is {self.stall:.1f} chunk times, and each of the {self.lost * 100:.1f} "
            f"chunks lost per 100 written idles the device that long: "
            f"1 / (1 + {self.lost:.3f} x {self.stall:.1f}) = {self.fraction:.0%}"
        )


def loss_bound(run: Run, runs: list[Run], ceiling: Run) -> LossBound | None:
    """The bound for a lossy run, from window 1's lossless run at its round trip, if measured."""
    one = next((r for r in runs if (r.rtt_ms, r.loss, r.window) == (run.rtt_ms, 0, 1)), None)
    if not run.loss or one is None or one.failed:
        return None
    stall = (one.seconds / one.chunks) / (ceiling.seconds / ceiling.chunks)
    return LossBound(stall, run.loss / (1 - run.loss))


def verdicts(runs: list[Run], uart: Ceiling) -> list[str]:
    ceiling = measured_ceiling(runs)
    lines = [
        f"measured ceiling: {ceiling.throughput / KB:.2f} kB/s at {CEILING_RTT_MS:g} ms with "
        f"window {MAX_WINDOW}, {ceiling.throughput / uart.rate():.0%} of the UART arithmetic"
    ]
    for target in TARGETS:
        run = next(
            (r for r in runs if (r.rtt_ms, r.loss, r.window) == (target.rtt_ms, target.loss, AUTO)),
            None,
        )
        want = f"want >= {target.fraction:.0%}"
        if run is None:
            lines.append(f"target {target.describe()} ({want}): not measured in this run")
            continue
        if run.failed:
            line = f"target {target.describe()} ({want}): NOT MET, the push failed"
        else:
            fraction = run.throughput / ceiling.throughput
            met = "MET" if fraction >= target.fraction else "NOT MET"
            line = (
                f"target {target.describe()}: {fraction:.0%} of the measured ceiling ({want}): "
                f"{met}"
            )
        bound = loss_bound(run, runs, ceiling)
        if bound is not None:
            line += f"; {bound.explain()}"
            if bound.fraction < target.fraction:
                line += "; the target is above that bound: no window meets it with this device"
        lines.append(line)
    targeted = {(t.rtt_ms, t.loss) for t in TARGETS}
    for run in sorted(runs, key=_order):
        if not run.loss or run.window != AUTO or (run.rtt_ms, run.loss) in targeted:
            continue
        got = "the push failed" if run.failed else f"{run.throughput / ceiling.throughput:.0%}"
        bound = loss_bound(run, runs, ceiling)
        lines.append(
            f"{Target(run.rtt_ms, run.loss, 0.0).describe()} (no target): {got} of the measured "
            "ceiling" + (f"; {bound.explain()}" if bound else "")
        )
    return lines


# -- command line --------------------------------------------------------------------------


def _rtts(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list") from None
    if not values or any(not 0 <= v < 1e6 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: want one or more round trips >= 0 ms")
    return values


def _windows(text: str) -> list[Window]:
    windows: list[Window] = []
    for item in (v.strip() for v in text.split(",")):
        if item == AUTO:
            windows.append(AUTO)
        elif item.isdigit() and int(item) >= 1:
            windows.append(int(item))
        elif item:
            raise argparse.ArgumentTypeError(
                f"{item!r} in {text!r}: a window is {AUTO!r} or a whole number of chunks >= 1"
            )
    if not windows:
        raise argparse.ArgumentTypeError(f"{text!r}: want one or more windows")
    return windows


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage") from None
    if not 0 <= value < 100:
        raise argparse.ArgumentTypeError(f"{text}: want a percentage from 0 to below 100")
    return value / 100


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hil.bench", description=__doc__.splitlines()[0])
    p.add_argument("--rig", type=Path, default=DEFAULT_RIG, help=f"default {DEFAULT_RIG}")
    p.add_argument(
        "--rtt",
        type=_rtts,
        default=[50.0, 300.0, 600.0],
        help="round trips in ms (default 50,300,600)",
    )
    p.add_argument("--size", type=int, default=262144, help="image bytes (default 262144)")
    p.add_argument(
        "--windows",
        type=_windows,
        default=[1, 8, AUTO],
        help=f"windows to compare, numbers of chunks or {AUTO!r} (default 1,8,{AUTO})",
    )
    p.add_argument(
        "--loss",
        type=_percent,
        default=5.0 / 100,
        metavar="PERCENT",
        help=f"also push with window {AUTO} at each rtt while PERCENT of the chunks are lost "
        "on their way to the device (default 5; 0 for none)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"sanity check in seconds: {QUICK['size']} bytes at {QUICK['rtt'][0]:g} ms only, "
        "no loss",
    )
    return p


def bench(args: argparse.Namespace) -> list[str]:
    if args.quick:
        args.rtt, args.size, args.loss = QUICK["rtt"], QUICK["size"], QUICK["loss"]
    try:
        rig = load_rig(args.rig)
    except ConfigError as exc:
        raise Refusal(str(exc)) from None
    uart = uart_ceiling(rig.profile, args.size)
    chunks = ota.chunk_count(args.size, rig.profile.ota.chunk_data_size)
    plans = plan(args.rtt, args.windows, args.loss)
    lossy = f", and window {AUTO} with {args.loss:.0%} lost" if args.loss else ""
    print(
        f"OTA benchmark on the twin ({rig.path}): a {args.size}-byte image ({chunks} chunks), "
        f"windows {', '.join(map(str, args.windows))}{lossy} at rtt "
        f"{', '.join(f'{r:g}' for r in args.rtt)} ms, the ceiling at {CEILING_RTT_MS:g} ms; "
        "one twin per rtt, run side by side",
        file=sys.stderr,
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hil-bench-") as tmp, contextlib.ExitStack() as stack:
        sessions = {
            rtt: stack.enter_context(rig_up(with_rtt(rig, rtt), Path(tmp) / f"rtt{rtt:g}"))
            for rtt in plans
        }
        runs = asyncio.run(run_all(sessions, plans, args.size))
    return [
        *uart.explain(),
        "",
        f"{args.size} bytes ({chunks} chunks) per push; seconds are OTA:BEGIN to OTA:SUCCESS; "
        f"'of ceiling' is of the measured ceiling, 'peak' the most chunks in flight; "
        f"the whole benchmark took {time.monotonic() - started:.0f} s",
        *table(runs, uart),
        "",
        *verdicts(runs, uart),
    ]


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        print("\n".join(bench(args)))
    except Refusal as exc:
        print(f"hil.bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hil.bench: interrupted; the twins and brokers were stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`hil ota`: push a firmware image to a rig's device over MQTT, or serve one over HTTP(S).

`hil ota push FIRMWARE --rig R` takes the suites' path (RigSession, MqttRecorder, Dut.ota), so
a build pushed by hand goes through the same sender the tests prove. The file is verified
before anything is brought up, the device's version is checked so a push is never a silent
no-op, and the rig is always given back, also on Ctrl-C. `hil ota serve IMAGE` runs the
suites' image server for a device that downloads its update itself (HTTP OTA: range requests,
/version) until Ctrl-C or SIGTERM, one line per request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from hil.bringup import DeviceState, RigDown, VersionUnknown
from hil.broker import BrokerError
from hil.dut import Dut
from hil.lifetime import interrupted, signals_as_interrupt
from hil.measurements import Measurements
from hil.mqtt import MqttRecorder, MqttTimeout
from hil.ota import DEFAULT_WINDOW, OtaError, OtaResult
from hil.ota.http_server import ImageServer, ServedRequest, ServeError, tls_context
from hil.ota.window import AUTO, Window
from hil.profile import DeviceProfile
from hil.protocol.image import ImageError, ImageInfo, parse_image
from hil.protocol.ota import SUCCESS
from hil.rig import Rig, load_rig
from hil.schema import ConfigError
from hil.session import RigSession

KB = 1000.0


class Refusal(Exception):
    """A one-line reason the push did not happen or did not complete (exit code 1)."""


@dataclass(frozen=True)
class Firmware:
    """A verified image file and what it declares."""

    path: Path
    data: bytes
    info: ImageInfo

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def version(self) -> str:
        return self.info.version


@dataclass(frozen=True)
class Delivery:
    """A completed push: what it cost and the version the device reports after its reboot."""

    result: OtaResult
    version: str


def read_firmware(path: Path) -> Firmware:
    """Read and verify `path` as the device's bootloader would, before any rig is touched."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise Refusal(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        info = parse_image(data)
    except ImageError as exc:
        raise Refusal(f"{path} is not an ESP32 app image: {exc}; nothing was sent") from None
    if not info.version:
        raise Refusal(
            f"{path} has no app descriptor (esp_app_desc_t), so the device could not report "
            "its version after the update; build it with ESP-IDF's app description"
        )
    return Firmware(path, data, info)


def check_fits(firmware: Firmware, profile: DeviceProfile) -> None:
    """Refuse here what the device would refuse with OTA:ERROR:size after bring-up."""
    limit = profile.ota.partition_size
    if firmware.info.size > limit:
        raise Refusal(
            f"{firmware.path} is {firmware.info.size} bytes, larger than the OTA partition "
            f"({limit} bytes, profile ota.partition_size); nothing was sent"
        )


class ProgressLine:
    """Push progress on a stream: redrawn in place on a terminal, a line per ~10 % otherwise."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream = stream
        self.total = total
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self.shown_tenth = -1
        self.drawn = False

    def __call__(self, acked: int, total: int, retransmissions: int) -> None:
        tenth = acked * 10 // total if total else 10
        if self.tty:
            self.stream.write("\r" + self.text(acked, total, retransmissions) + "\x1b[K")
            self.drawn = True
        elif tenth > self.shown_tenth:
            self.shown_tenth = tenth
            self.stream.write(self.text(acked, total, retransmissions) + "\n")
        self.stream.flush()

    def text(self, acked: int, total: int, retransmissions: int) -> str:
        elapsed = time.monotonic() - self.started
        rate = acked / elapsed if elapsed > 0 else 0.0
        eta = (total - acked) / rate if rate > 0 else math.inf
        percent = 100.0 * acked / total if total else 100.0
        width = len(str(total))
        return (
            f"{acked:>{width}}/{total} bytes {percent:5.1f} %  {rate / KB:6.2f} kB/s  "
            f"ETA {_clock(eta)}  {retransmissions} retransmissions"
        )

    def finish(self) -> None:
        """End the in-place line so what follows starts on its own line."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def rig_dut(session: RigSession, mqtt: MqttRecorder) -> Dut:
    """The device of a rig that is up, with the state bring-up will learn."""
    state = DeviceState(session, mqtt)
    return Dut(
        session.rig.profile, session.console, mqtt, session.power, Measurements(), state=state
    )


async def device_version(dut: Dut) -> str:
    """Bring the device to a known state and return the version it then reports.

    A device that is already running says nothing of its version until it reconnects, so it
    is restarted with the rig's means (board power, reset); a rig without them must have a
    retained STATUS:ONLINE, else the refusal names the table to add.
    """
    try:
        if dut.state is not None:
            await dut.state.bring_up()
        return await dut.current_version()
    except (RigDown, VersionUnknown) as exc:
        raise Refusal(str(exc)) from None


def after_success(dut: Dut, since: int) -> int:
    """The record index just past the device's last OTA:SUCCESS at or after `since`.

    Only a STATUS:ONLINE after it comes from the reboot into the new image: one from before
    (a reconnection mid-update) still names the old one and would read as a rollback.
    """
    for record in reversed(dut.mqtt.received(dut.topics.status_topic, since=since)):
        if record.text.strip() == SUCCESS:
            return record.index + 1
    return dut.mqtt.mark()  # not recorded (cannot happen after a push): only what comes next


async def deliver(dut: Dut, image: bytes, *, window: Window, on_progress=None) -> Delivery:
    """Push `image` and wait, within `limits.reboot_s`, for the device to come back online."""
    mark = dut.mqtt.mark()
    with dut.console.reboot_expected():
        result = await dut.ota(image, window=window, on_progress=on_progress)
        try:
            version = await dut.wait_online(dut.limits.reboot_s, since=after_success(dut, mark))
        except MqttTimeout:
            raise Refusal(
                f"the device took the image (OTA:SUCCESS) but did not report STATUS:ONLINE "
                f"within {dut.limits.reboot_s:g} s (limits.reboot_s); check its console"
            ) from None
    return Delivery(result, version)


def summary(firmware: Firmware, delivery: Delivery, window: Window) -> str:
    r = delivery.result
    sized = f"{AUTO} (up to {r.peak_window})" if window == AUTO else window
    return (
        f"pushed {firmware.name} ({firmware.version}, {r.size} bytes, {r.chunks} chunks) in "
        f"{r.seconds:.1f} s, {r.throughput / KB:.2f} kB/s, {r.retransmissions} "
        f"retransmissions, window {sized}; device now reports {delivery.version}"
    )


async def push_to(session: RigSession, firmware: Firmware, args: argparse.Namespace) -> str:
    """The push itself, on a rig that is up: version check, transfer, reboot, summary line."""
    assert session.endpoint is not None and session.console is not None
    profile = session.rig.profile
    async with MqttRecorder(session.endpoint, [profile.mqtt.status_topic]) as mqtt:
        dut = rig_dut(session, mqtt)
        current = await device_version(dut)
        if current == firmware.version and not args.force:
            raise Refusal(
                f"the device already reports version {current}, the version of "
                f"{firmware.name}; nothing was sent (pass --force to push it anyway)"
            )
        progress = ProgressLine(sys.stderr, firmware.info.size)
        try:
            async with asyncio.timeout(args.timeout):
                delivery = await deliver(
                    dut, firmware.data, window=args.window, on_progress=progress
                )
        except TimeoutError:
            raise Refusal(
                f"gave up pushing {firmware.name} after --timeout {args.timeout:g} s"
            ) from None
        except OtaError as exc:
            raise Refusal(f"{firmware.name} ({firmware.version}) not installed: {exc}") from None
        finally:
            progress.finish()
    if delivery.version != firmware.version:
        raise Refusal(
            f"the device took {firmware.name} but came back reporting {delivery.version}, "
            f"not {firmware.version}: the new image failed its self-test and rolled back"
        )
    return summary(firmware, delivery, args.window)


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="hil-ota-") as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def rig_up(rig: Rig, workdir: Path) -> Iterator[RigSession]:
    """The rig brought up (broker, twin, power, console) and always given back."""
    session = RigSession(rig, workdir)
    try:
        session.start()
    except (BrokerError, RuntimeError, OSError, ConfigError) as exc:
        raise Refusal(f"cannot bring rig {rig.name!r} ({rig.path}) up: {exc}") from None
    try:
        yield session
    finally:
        session.close()


def push(args: argparse.Namespace) -> str:
    firmware = read_firmware(args.firmware)
    try:
        rig = load_rig(args.rig)
    except ConfigError as exc:
        raise Refusal(str(exc)) from None
    check_fits(firmware, rig.profile)
    with _workdir(args.workdir) as workdir, rig_up(rig, workdir) as session:
        try:
            return asyncio.run(push_to(session, firmware, args))
        except BrokerError as exc:
            raise Refusal(str(exc)) from None


def _positive(kind: type) -> object:
    def parse(text: str):  # type: ignore[no-untyped-def]
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):  # nan passes `<= 0` and inf never runs out
            raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, not {text}")
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
        return value

    return parse


def _window(text: str) -> Window:
    """`--window`: sized from the link, or a whole number of chunks."""
    if text == AUTO:
        return AUTO
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"must be {AUTO!r} or a whole number of chunks greater than 0, not {text!r}"
        )
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hil ota", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("push", help="push a firmware image to the rig's device")
    p.add_argument("firmware", type=Path, metavar="FIRMWARE", help="ESP32 app image (.bin)")
    p.add_argument("--rig", type=Path, required=True, help="rig file, e.g. rigs/sim.toml")
    p.add_argument(
        "--window",
        type=_window,
        default=DEFAULT_WINDOW,
        metavar=f"{AUTO}|N",
        help=f"chunks in flight: {AUTO} sizes it from the measured round trip and answer "
        f"rate, N keeps N (1 is stop-and-wait; default {DEFAULT_WINDOW})",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="push even when the device already reports the image's version",
    )
    p.add_argument(
        "--timeout",
        type=_positive(float),
        default=None,
        metavar="S",
        help="give up when the push and reboot take longer than S seconds (default: "
        "only the profile's per-answer limits)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the broker and twin keep their files (default: a temporary directory)",
    )
    srv = verbs.add_parser("serve", help="serve an image over HTTP(S): /firmware.bin and /version")
    srv.add_argument("image", type=Path, metavar="IMAGE", help="ESP32 app image (.bin)")
    srv.add_argument(
        "--host",
        default="0.0.0.0",
        help="address to listen on, one the device reaches (default: every IPv4 address)",
    )
    srv.add_argument(
        "--port", type=_port, default=8080, help="TCP port (default 8080; 0 picks a free one)"
    )
    srv.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="serve HTTPS with this certificate"
    )
    srv.add_argument("--tls-key", type=Path, metavar="PEM", help="the certificate's private key")
    return parser


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0 to 65535)")
    return int(text)


def serve(args: argparse.Namespace) -> str:
    """Serve the image until Ctrl-C or SIGTERM; returns the closing summary line."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise Refusal("--tls-cert and --tls-key go together: give both for HTTPS, or neither")
    try:
        data = args.image.read_bytes()
    except OSError as exc:
        raise Refusal(f"cannot read {args.image}: {exc.strerror or exc}") from None
    served: list[ServedRequest] = []

    def log(request: ServedRequest) -> None:
        served.append(request)
        print(request.text(), flush=True)

    try:
        tls = tls_context(str(args.tls_cert), str(args.tls_key)) if args.tls_cert else None
        server = ImageServer(
            data, host=args.host, port=args.port, tls=tls, on_request=log, name=str(args.image)
        )
        server.start()
    except ServeError as exc:
        raise Refusal(str(exc)) from None
    try:
        print(
            f"serving {args.image.name} ({server.version}, {server.size} bytes) at "
            f"{server.image_url}, its version at {server.url}{server.version_path}; "
            "Ctrl-C stops",
            flush=True,
        )
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return f"stopped after {len(served)} request{'' if len(served) == 1 else 's'}"


def main(argv: list[str]) -> int:
    """Run `hil ota <argv>`: 0 when pushed, 1 with one line on stderr when not, 2 on usage,
    128 + the signal's number when Ctrl-C, SIGTERM or SIGHUP stopped it."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # usage error or --help: argparse has printed it
        return int(exc.code or 0)
    if args.verb == "serve":
        return _serve_main(args)
    with signals_as_interrupt() as received:
        try:
            print(push(args))
        except Refusal as exc:
            print(f"hil ota push: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return interrupted(received, "hil ota push", "the rig was given back")
    return 0


def _serve_main(args: argparse.Namespace) -> int:
    """`hil ota serve`: 0 when Ctrl-C or SIGTERM stops it (the way it ends), 1 with one line
    on stderr when it cannot serve."""
    with signals_as_interrupt() as received:
        try:
            summary_line = serve(args)
        except Refusal as exc:
            print(f"hil ota serve: {exc}", file=sys.stderr)
            return 1
    signal_name = received[0].name if received else "SIGINT"
    print(f"hil ota serve: {summary_line} ({signal_name})", file=sys.stderr)
    return 0

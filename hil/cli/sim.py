"""`python -m hil.sim` / `hil sim`: run the device twin until SIGTERM or SIGINT.

When ready it prints one JSON line on stdout (console and relay ports, broker, version, pid);
everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from hil import schema
from hil.profile import DeviceProfile, load_profile, profile_from_data
from hil.sim.firmware import Credentials
from hil.sim.firmware_rawtcp import refusal
from hil.sim.local_broker import LocalBroker
from hil.sim.options import CONSOLES, FAULTS, TRANSPORTS, SimOptions
from hil.sim.twin import Twin

log = logging.getLogger("hil.sim")


def build_parser() -> argparse.ArgumentParser:
    defaults = SimOptions()
    p = argparse.ArgumentParser(prog="hil sim", description="Run the ESP32 + SIM7600 device twin.")
    p.add_argument(
        "--dir",
        type=Path,
        help="where the console and relay symlinks go (default: a new temporary directory)",
    )
    p.add_argument(
        "--broker",
        metavar="HOST:PORT",
        help="MQTT broker the modem connects to (default: start a local one)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        metavar="FILE.json",
        help="resolved device profile as JSON (default: the reference profile)",
    )
    p.add_argument(
        "--version",
        default=defaults.firmware_version,
        help="firmware version of a factory-fresh device",
    )
    p.add_argument(
        "--flash",
        type=Path,
        metavar="FILE",
        help="keep the whole flash in FILE, as a board keeps it across runs (created "
        "factory-fresh when missing; delete it for a factory-fresh device); default: fresh "
        "at every start",
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=defaults.time_scale,
        help="factor on modem boot and registration delays",
    )
    p.add_argument("--rtt-ms", type=float, default=defaults.rtt_ms, help="modem-broker round trip")
    p.add_argument(
        "--loss",
        type=float,
        default=defaults.loss,
        help="probability a packet needs a TCP retransmission",
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        choices=FAULTS,
        metavar="NAME",
        help=f"switch on a firmware bug (repeatable): {', '.join(FAULTS)}",
    )
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of the link model")
    p.add_argument(
        "--relay-channel",
        type=int,
        default=defaults.relay_channel,
        help="LCUS channel wired to the modem supply",
    )
    p.add_argument(
        "--board-channel",
        type=int,
        default=defaults.board_channel,
        help="LCUS channel wired to the whole device's supply",
    )
    p.add_argument(
        "--strap-channel",
        type=int,
        default=defaults.strap_channel,
        help="LCUS channel that holds GPIO0 low while energized (ROM download mode at reset)",
    )
    p.add_argument(
        "--console",
        choices=CONSOLES,
        default=defaults.console,
        help="native-usb: the port vanishes on reset and loses what is printed while "
        "no host has it open; uart-bridge: the port stays across resets",
    )
    p.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default=defaults.transport,
        help="cmqtt: the modem's MQTT service (AT+CMQTT...); raw-tcp: SIM7000-style TCP "
        "commands carrying MQTT frames the firmware builds itself",
    )
    p.add_argument("--username", help="broker user name the firmware sends in AT+CMQTTCONNECT")
    p.add_argument(
        "--password-env", metavar="VAR", help="environment variable holding the broker password"
    )
    p.add_argument(
        "--ca",
        type=Path,
        metavar="FILE.pem",
        help="speak TLS to the broker, verifying it against this CA (the firmware's CA file)",
    )
    p.add_argument("--cert", type=Path, metavar="FILE.pem", help="the device's client certificate")
    p.add_argument("--key", type=Path, metavar="FILE.key", help="the device's private key")
    p.add_argument("-v", "--verbose", action="store_true", help="log AT-level detail")
    return p


def _broker(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--broker must be HOST:PORT, got {text!r}")
    return host, int(port)


def _credentials(args: argparse.Namespace) -> Credentials | None:
    """The firmware's TLS files, read now: one clear error for a missing or unreadable one."""
    if (args.cert is None) != (args.key is None):
        raise ValueError("--cert and --key go together (the device's certificate and its key)")
    if args.ca is None:
        if args.cert is not None:
            raise ValueError("--cert and --key need --ca: the twin speaks TLS only with a CA")
        return None
    data = {}
    for option in ("ca", "cert", "key"):
        path = getattr(args, option)
        if path is None:
            continue
        try:
            data[option] = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"--{option} {path}: cannot read it ({exc.strerror})") from None
    return Credentials(**data)


def _profile(path: Path | None) -> DeviceProfile:
    if path is None:
        return load_profile()
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--profile {path}: cannot read JSON profile ({exc})") from None
    try:
        return profile_from_data(data)
    except schema.ConfigError as exc:
        raise ValueError(f"--profile {path}: {exc}") from None


async def _serve(
    args: argparse.Namespace,
    options: SimOptions,
    profile: DeviceProfile,
    tls: Credentials | None,
) -> None:
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            raise ValueError(f"--password-env {args.password_env}: the variable is not set")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        if args.broker:
            broker = _broker(args.broker)
        else:
            local = LocalBroker()
            stack.push_async_callback(local.stop)
            broker = await local.start()
            log.info("started a local broker on %s:%d", *broker)
        tmp = None
        if args.dir is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="hil-sim-"))
        directory = Path(tmp or args.dir)
        directory.mkdir(parents=True, exist_ok=True)
        twin = Twin(directory, broker, profile, options, args.username, password, tls)
        stack.push_async_callback(twin.close)
        await twin.start()
        ready = {
            "console": str(twin.console.link),
            "relay": str(twin.relay.link),
            "broker": f"{broker[0]}:{broker[1]}",
            "version": options.firmware_version,
            "pid": os.getpid(),
        }
        print(json.dumps(ready), flush=True)
        log.info(
            "twin ready: console %s, relay %s, broker %s:%d",
            twin.console.link,
            twin.relay.link,
            *broker,
        )
        stopped = loop.create_task(stop.wait())
        failed = loop.create_task(twin.wait())
        done, pending = await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if failed in done:
            failed.result()
        log.info("stopping")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s: %(message)s",
    )
    if not args.verbose:
        for noisy in ("amqtt", "transitions"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        options = SimOptions(
            firmware_version=args.version,
            time_scale=args.time_scale,
            rtt_ms=args.rtt_ms,
            loss=args.loss,
            faults=list(args.fault),
            seed=args.seed,
            relay_channel=args.relay_channel,
            board_channel=args.board_channel,
            strap_channel=args.strap_channel,
            console=args.console,
            flash=args.flash,
            transport=args.transport,
        )
        if args.broker:
            _broker(args.broker)
        profile = _profile(args.profile)
        tls = _credentials(args)
        if options.transport == "raw-tcp" and (why := refusal(profile, tls is not None)):
            raise ValueError(why)
        asyncio.run(_serve(args, options, profile, tls))
    except (ValueError, schema.ConfigError) as exc:
        print(f"hil sim: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0

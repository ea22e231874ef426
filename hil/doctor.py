"""`hil doctor --rig R`: check a rig part by part before trusting it with a run.

A suite that fails because the broker password expired or the relay sits on the wrong channel
blames the device. The doctor brings the rig up the way a run does (RigSession: lock, broker,
twin, power, console) and asks each part one question, in order, printing what to fix. It gives
everything back at the end, as a run would: power on, ports closed, broker and twin stopped.
Lab CI runs the same checks before the suites with `pytest --hil-doctor`.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path

from hil.bringup import DeviceState, RigDown
from hil.broker import BrokerError
from hil.console import ConsoleBuffer, ConsoleTimeout
from hil.lab import LabError
from hil.lock import RigBusy
from hil.mqtt import MqttRecorder, MqttTimeout
from hil.power import PowerDriver, PowerError
from hil.rig import Rig, load_rig
from hil.schema import ConfigError
from hil.session import RigSession

OK, FAIL, SKIPPED = "ok", "FAIL", "skipped"
CONSOLE_WAIT_S = 5.0
ECHO_TEXT = "hil doctor"


class RigError(RuntimeError):
    """The rig is not fit for a run: every rig test is an error (rig at fault), not a failure."""


@dataclass(frozen=True)
class Check:
    name: str
    result: str
    detail: str


class Doctor:
    """Runs the checks in order; a part that failed makes the checks that need it skipped."""

    def __init__(
        self,
        rig_path: Path,
        workdir: Path,
        power_consent: bool = False,
        console_wait_s: float = CONSOLE_WAIT_S,
    ) -> None:
        self.rig_path = rig_path
        self.workdir = workdir
        self.power_consent = power_consent
        self.console_wait_s = console_wait_s
        self.checks: list[Check] = []
        self._online_seen: str | None = None

    def _add(self, name: str, result: str, detail: str) -> None:
        self.checks.append(Check(name, result, detail))

    @property
    def failed(self) -> bool:
        return any(c.result == FAIL for c in self.checks)

    async def run(self) -> list[Check]:
        try:
            rig = load_rig(self.rig_path)
        except ConfigError as exc:
            self._add("rig file", FAIL, str(exc))
            self._skip_rest("rig file", ("broker", "bring-up", "console", "relay", "device"))
            return self.checks
        self._add("rig file", OK, f"{rig.name!r} from {rig.path}")
        session = RigSession(rig, self.workdir)
        try:
            await self._with_session(session)
        finally:
            session.close()
        return self.checks

    async def _with_session(self, session: RigSession) -> None:
        rest = ["broker", "bring-up", "console", "relay", "device"]
        try:
            session.start()
        except LabError as exc:  # the lab's place: not there, not ours in time, no labgrid
            self._add("place", FAIL, str(exc))
            self._skip_rest("place", rest)
            return
        except RigBusy as exc:
            self._add("rig free", FAIL, str(exc))
            self._skip_rest("rig free", rest)
            return
        except BrokerError as exc:
            self._add("broker", FAIL, str(exc))
            self._skip_rest("broker", rest[1:])
            return
        except Exception as exc:  # the twin, the power switch or the console did not come up
            part = "relay" if isinstance(exc, PowerError) else "console"
            for name in rest:
                if name == part:
                    self._add(name, FAIL, str(exc))
                else:
                    self._add(name, SKIPPED, f"bring-up stopped at the {part}")
            return
        rig, endpoint = session.rig, session.endpoint
        assert endpoint is not None and session.console is not None
        if session.place is not None:
            self._add("place", OK, f"acquired {session.place.describe()}")
        recorder = MqttRecorder(endpoint, [rig.profile.mqtt.status_topic], "hil-doctor")
        try:
            await recorder.__aenter__()
        except BrokerError as exc:
            self._add("broker", FAIL, str(exc))
            self._skip_rest("broker", rest[1:])
            return
        try:
            self._add("broker", OK, f"connected to {endpoint} ({rig.broker.name})")
            if not await self._bring_up(session, recorder):
                self._skip_rest("bring-up", ("console", "relay", "device"))
                return
            await self._console(rig, session.console, recorder)
            await self._relay(rig, session.power, session.console, recorder)
            await self._device(rig, recorder)
        finally:
            await recorder.__aexit__(None, None, None)

    def _skip_rest(self, failed: str, names: list[str] | tuple[str, ...]) -> None:
        for name in names:
            self._add(name, SKIPPED, f"{failed} failed")

    async def _bring_up(self, session: RigSession, mqtt: MqttRecorder) -> bool:
        """Restart the device into a known state as a run would; False if it did not come up."""
        state = DeviceState(session, mqtt)
        try:
            online = await state.bring_up()
        except RigDown as exc:
            self._add("bring-up", FAIL, str(exc))
            return False
        if online is None:
            self._add("bring-up", SKIPPED, state.unknown or "no means to restart the device")
            return True
        self._online_seen = online.version
        self._add(
            "bring-up",
            OK,
            f"{online.means}: STATUS:ONLINE:{online.version} after {online.seconds:.1f} s "
            f"(boot reason: {online.boot_reason})",
        )
        return True

    async def _console(self, rig: Rig, console: ConsoleBuffer, mqtt: MqttRecorder) -> None:
        port = getattr(rig.console.options, "port", None) or rig.console.name
        if not console.lines:
            try:
                await console.expect(".", self.console_wait_s, since=0)
            except ConsoleTimeout:
                # An idle device prints nothing; an echo command makes it print its LCD line.
                await mqtt.publish(
                    rig.profile.mqtt.command_topic, rig.profile.crypto.cipher().encrypt(ECHO_TEXT)
                )
                try:
                    await console.expect(".", rig.profile.limits.echo_s, since=0)
                except ConsoleTimeout:
                    self._add(
                        "console",
                        FAIL,
                        f"port {port} opened but printed nothing in {self.console_wait_s:g} s "
                        "nor after an echo command; check that [console] is the device's "
                        f"port and its baud ({rig.profile.console.baud})",
                    )
                    return
        self._add("console", OK, f"port {port} open, {len(console.lines)} line(s) so far")

    async def _relay(
        self, rig: Rig, power: PowerDriver | None, console: ConsoleBuffer, mqtt: MqttRecorder
    ) -> None:
        if power is None:
            self._add("relay", SKIPPED, "the rig has no [power] table")
            return
        if not self.power_consent:
            self._add("relay", SKIPPED, "pass --power-consent to cut the modem's power once")
            return
        limits, lost = rig.profile.limits, rig.profile.console.network_lost
        mark = console.mark()
        mqtt.skip()
        start = time.monotonic()
        try:
            power.off()
            noticed = ""
            if lost:
                try:
                    await console.expect(lost, limits.detect_s, since=mark)
                    noticed = f"device printed {lost!r} after {time.monotonic() - start:.1f} s; "
                except ConsoleTimeout:
                    power.on()
                    self._add(
                        "relay",
                        FAIL,
                        f"{power.describe()} accepted off, but the device did not print "
                        f"{lost!r} within {limits.detect_s:g} s; check [power] channel, "
                        "port and normally_closed against the wiring",
                    )
                    return
            power.on()
        except Exception as exc:
            self._add("relay", FAIL, f"{power.describe()}: {exc}")
            return
        back = time.monotonic()
        try:
            self._online_seen = await _online(rig, mqtt, limits.recovery_s)
        except MqttTimeout:
            self._add(
                "relay",
                FAIL,
                f"{noticed}power back on, but no STATUS:ONLINE within "
                f"{limits.recovery_s:g} s (limits.recovery_s)",
            )
            return
        self._add(
            "relay", OK, f"off then on; {noticed}online again after {time.monotonic() - back:.1f} s"
        )

    async def _device(self, rig: Rig, mqtt: MqttRecorder) -> None:
        profile = rig.profile
        cipher = profile.crypto.cipher()
        topic = profile.mqtt.status_topic
        mark = mqtt.mark()
        start = time.monotonic()
        await mqtt.publish(profile.mqtt.command_topic, cipher.encrypt(ECHO_TEXT))
        try:
            await mqtt.expect(topic, ECHO_TEXT, profile.limits.echo_s, since=mark)
            second = await mqtt.expect(topic, timeout=profile.limits.echo_s)
        except MqttTimeout:
            seen = f"; STATUS:ONLINE:{self._online_seen} was seen" if self._online_seen else ""
            self._add(
                "device",
                FAIL,
                f"no echo on {topic!r} within {profile.limits.echo_s:g} s{seen}; is the "
                "device online, on this broker, and using the profile's key and IV?",
            )
            return
        expected = profile.crypto.echo_prefix + ECHO_TEXT
        if cipher.decrypt(second.text).decode("utf-8", "replace") != expected:
            self._add(
                "device",
                FAIL,
                f"echo's second answer {second.text!r} does not decrypt to "
                f"{expected!r} with the profile's key and IV",
            )
            return
        online = f"STATUS:ONLINE:{self._online_seen} seen; " if self._online_seen else ""
        self._add("device", OK, f"{online}echo answered in {time.monotonic() - start:.2f} s")


async def _online(rig: Rig, mqtt: MqttRecorder, timeout: float) -> str:
    record = await mqtt.expect(
        rig.profile.mqtt.status_topic, re.compile(rig.profile.status.online), timeout
    )
    match = re.fullmatch(rig.profile.status.online, record.text)
    return match["version"] if match and "version" in match.groupdict() else record.text


def format_table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':<{width}}  {'result':<7}  detail"]
    lines += [f"{c.name:<{width}}  {c.result:<7}  {c.detail}" for c in checks]
    return "\n".join(lines)


def run_checks(rig_path: Path, workdir: Path, power_consent: bool = False) -> list[Check]:
    return asyncio.run(Doctor(rig_path, workdir, power_consent).run())


def check_rig(rig: Rig, workdir: Path) -> None:
    """The doctor before a pytest run (`--hil-doctor`, no power cut): RigError if a check failed."""
    checks = run_checks(rig.path, workdir)
    failed = [c for c in checks if c.result == FAIL]
    if failed:
        rows = "; ".join(f"{c.name}: {c.detail}" for c in failed)
        raise RigError(f"hil doctor: rig {rig.name!r} is not fit for a run: {rows}")

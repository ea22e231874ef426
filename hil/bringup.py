"""Putting the device in a known state, and keeping it there between tests.

A real device is in whatever state the last person left it when a run starts, and it says
`STATUS:ONLINE` only when it (re)connects, never again on request. So bring-up does not wait
for the device: it makes it restart, with the means the rig has (a board power cycle, else the
reset line or command), and proves the restart by MQTT. After each test the device must still
be answering; if a test broke it, that test is charged and the device is restarted, so the
next test starts from the same known state. A device that cannot be brought online makes
every rig test error at once with one diagnosis, rather than each waiting out its timeouts.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hil.console import DeviceIncident, Incident
from hil.mqtt import MqttRecorder, MqttTimeout

if TYPE_CHECKING:
    from hil.session import RigSession

log = logging.getLogger("hil.bringup")

RETAINED_WAIT_S = 2.0  # a broker sends retained messages right after SUBACK
TAIL = 6  # console lines and MQTT messages quoted in a diagnosis
CONSOLE_POLL_S = 0.05


class RigDown(RuntimeError):
    """The device could not be brought online: a rig error, so tests error, never fail."""


class VersionUnknown(RuntimeError):
    """The rig has no means to restart the device and nothing told its version."""


class DeviceStoppedAnswering(AssertionError):
    """After the test the device was silent, powered off or gone: charged to that test."""


@dataclass(frozen=True)
class Online:
    """How the device came online: its version, what made it restart, and how long it took."""

    version: str
    means: str  # "board power cycle", "reset (esp-serial)", "retained STATUS:ONLINE"
    boot_reason: str  # the ROM's reset reason where the console shows it, else the means
    seconds: float
    at: float


@dataclass(frozen=True)
class Marks:
    """Where a test started, in the console and MQTT records."""

    console: int
    mqtt: int


class DeviceState:
    """The device of one rig session: brought online once, checked after every test."""

    def __init__(self, session: RigSession, mqtt: MqttRecorder) -> None:
        self.session = session
        self.mqtt = mqtt
        self.rig = session.rig
        self.profile = session.rig.profile
        self.console = session.console
        self.loop = asyncio.get_running_loop()
        self._online_re = re.compile(self.profile.status.online)
        self.online: Online | None = None
        self.unknown: str | None = None  # why the version cannot be known, once that is so
        self.down: str | None = None  # the diagnosis, once the device cannot be brought back

    # -- bring-up ------------------------------------------------------------------------
    async def bring_up(self) -> Online | None:
        """Restart the device into a known state; None when the rig has no means to."""
        if not self.rig.reset_means:
            return await self._trust_retained()
        try:
            self.online = await self._restart()
        except RigDown as exc:
            self.down = str(exc)
            raise
        log.info(
            "device online as %s after %s in %.1f s",
            self.online.version,
            self.online.means,
            self.online.seconds,
        )
        return self.online

    async def _restart(self) -> Online:
        """Restart by the best means the rig has and wait for STATUS:ONLINE within boot_s."""
        means = self.rig.reset_means[0]
        boot_s = self.profile.limits.boot_s
        started = time.time()
        before_mqtt, since_console = self.mqtt.mark(), self.console.mark()
        with self.console.reboot_expected():
            try:
                await asyncio.to_thread(self._pulse)
            except Exception as exc:  # a relay or reset line that cannot be driven
                raise RigDown(
                    self._diagnosis(means, f"{means} failed: {exc}", before_mqtt)
                ) from None
            # Proof of the restart is what comes after the pulse: a STATUS:ONLINE that
            # arrives while the power is off was sent by the device's previous life (a
            # board still connecting when the run began, or a message late from the broker).
            since_mqtt = self.mqtt.mark()
            try:
                record = await self.mqtt.expect(
                    self.profile.mqtt.status_topic, self._online_re, boot_s, since=since_mqtt
                )
            except MqttTimeout:
                raise RigDown(
                    self._diagnosis(
                        means, f"no STATUS:ONLINE within boot_s = {boot_s:g} s", since_mqtt
                    )
                ) from None
        await self._console_open(means, since_mqtt)
        version = self._online_re.fullmatch(record.text)["version"]
        return Online(
            version,
            means,
            self._boot_reason(since_console, means),
            record.time - started,
            record.time,
        )

    async def _console_open(self, means: str, since_mqtt: int) -> None:
        """The device is online; its console port must be there too, or the rig names the
        wrong one (a test reading the console would otherwise fail as a device fault)."""
        reappear_s = getattr(self.console.options, "reappear_s", 0.0)
        deadline = self.loop.time() + reappear_s
        while not self.console.is_open:
            if self.loop.time() >= deadline:
                raise RigDown(
                    self._diagnosis(
                        means,
                        f"the device is online but its console port "
                        f"{self.console.options.describe()} did not appear within "
                        f"{reappear_s:g} s; check [console] port or match",
                        since_mqtt,
                    )
                )
            await asyncio.sleep(CONSOLE_POLL_S)  # the reader thread opens it; poll, bounded

    def _pulse(self) -> None:
        """Make the chip restart: a cold boot if the board's supply is switched, else a reset."""
        session = self.session
        if session.board_power is not None:
            session.board_power.cycle(self.rig.board_power_common.off_s)
        elif session.reset is not None:
            session.reset.reset()

    def _boot_reason(self, since: int, means: str) -> str:
        banner = (
            self.console.search(self.profile.console.boot, since)
            if self.profile.console.boot
            else None
        )
        if banner is not None:
            groups = banner.match.groupdict()
            return groups.get("reason") or banner.line.text
        return f"{means} (the console showed no boot banner)"

    async def _trust_retained(self) -> Online | None:
        """No way to restart the device: believe a retained STATUS:ONLINE if the broker has one."""
        topic = self.profile.mqtt.status_topic
        try:
            record = await self.mqtt.expect(
                topic,
                lambda r: r.retain and self._online_re.fullmatch(r.text) is not None,
                RETAINED_WAIT_S,
                since=0,
            )
        except MqttTimeout:
            self.unknown = (
                f"rig {self.rig.name!r} has no [board_power] or [reset] table and the broker "
                f"holds no retained STATUS:ONLINE on {topic!r}, so the harness can neither put "
                "the device in a known state nor learn its version; add [board_power] (a relay "
                'on the device\'s supply) or [reset] (driver = "esp-serial" or "command") to '
                f"{self.rig.path}"
            )
            return None
        version = self._online_re.fullmatch(record.text)["version"]
        self.online = Online(version, "retained STATUS:ONLINE", "unknown", 0.0, record.time)
        return self.online

    def require_version(self) -> str:
        """The version bring-up learnt; VersionUnknown (a rig error) if it could not."""
        if self.down:
            raise RigDown(self.down)
        if self.online is None:
            raise VersionUnknown(self.unknown or "the device's version is not known yet")
        return self.online.version

    # -- between tests -------------------------------------------------------------------
    def marks(self) -> Marks:
        return Marks(self.console.mark(), self.mqtt.mark())

    def after_test(
        self,
        marks: Marks,
        failed: BaseException | None = None,
        restarted: Callable[[str, str], None] | None = None,
    ) -> None:
        """Check the device answers after a test; charge the test and restart it if not.

        Runs the check on the session's event loop, which is idle between tests.
        """
        if self.mqtt.lost is not None:
            self.down = str(self.mqtt.lost)  # nothing more can be asked of the device
        if self.down or self.loop.is_closed() or self.loop.is_running():
            return
        problem = self.loop.run_until_complete(self._problem(marks, failed is not None))
        if problem is None:
            return
        incidents, text = problem
        recovery = self.loop.run_until_complete(self._recover())
        if restarted is not None:
            restarted(text, recovery)
        if failed is not None:
            failed.add_note(f"hil: after this test {text}; {recovery}")
            return
        if incidents:
            error = DeviceIncident(incidents)
            error.add_note(f"hil: {recovery}")
            raise error
        raise DeviceStoppedAnswering(f"{text}; {recovery}")

    async def _problem(self, marks: Marks, failed: bool) -> tuple[list[Incident], str] | None:
        for power, what in ((self.session.power, "modem"), (self.session.board_power, "board")):
            if power is not None and power.is_on is False:
                return [], f"the test left the {what}'s power off"
        incidents = self.console.incidents_since(marks.console)
        if incidents:
            kinds = ", ".join(sorted({i.kind for i in incidents}))
            return incidents, f"the device had a {kinds}"
        if self.console.gone:
            return [], f"the console is gone: {self.console.gone}"
        if self.online is None:
            return None  # nothing proved the device alive to begin with: no silence to judge
        silence = await self._silence(failed)
        return ([], silence) if silence else None

    async def _silence(self, failed: bool) -> str | None:
        """'No heartbeat for two periods': wait for a sign of life only when one is due."""
        period = self.profile.firmware.heartbeat_s
        topic = self.profile.mqtt.status_topic
        last = self.mqtt.last_received(topic)
        assert self.online is not None
        last_at = max(last.time if last is not None else 0.0, self.online.at)
        age = time.time() - last_at
        if age <= period and not failed:
            return None
        left = last_at + 2 * period - time.time()
        if left > 0:
            try:
                await self.mqtt.expect(topic, lambda r: not r.retain, left, since=self.mqtt.mark())
                return None
            except MqttTimeout:
                pass
        silent = time.time() - last_at
        return (
            f"the device stopped answering: nothing on {topic!r} for {silent:.1f} s "
            f"(heartbeat every {period:g} s)"
        )

    async def _recover(self) -> str:
        """Power back on what a test left off, then restart the device into a known state."""
        for power in (self.session.power, self.session.board_power):
            if power is not None and power.is_on is False:
                await asyncio.to_thread(power.on)
        if not self.rig.reset_means:
            return f"rig {self.rig.name!r} has no [board_power] or [reset] to restart the device"
        try:
            self.online = await self._restart()
        except RigDown as exc:
            self.down = str(exc)
            return f"the harness could not bring it back, so the remaining rig tests error:\n{exc}"
        return (
            f"the harness restarted it ({self.online.means}): online again as "
            f"{self.online.version} in {self.online.seconds:.1f} s"
        )

    # -- diagnosis -----------------------------------------------------------------------
    def _diagnosis(self, means: str, failure: str, since_mqtt: int) -> str:
        rig = self.rig
        console = self.console
        port = getattr(console, "port_path", None) or console.describe()
        port = f"port {port}" if port.startswith("/") else port
        lines = console.tail(TAIL)
        console_text = (
            "\n".join(f"      {line.format()}" for line in lines)
            if lines
            else "      (nothing: the port never opened or the device printed nothing)"
        )
        if console.gone:
            console_text += f"\n      {console.gone}"
        topic = self.profile.mqtt.status_topic
        messages = self.mqtt.received(topic, since_mqtt)[-TAIL:]
        mqtt_text = (
            "\n".join(f"      {r.text[:100]!r}" for r in messages)
            or "      (nothing since the restart)"
        )
        return (
            f"the device on rig {rig.name!r} did not come online: {failure}\n"
            f"  tried: {means} ({self._means_detail(means)}), then waited for STATUS:ONLINE on "
            f"{topic!r} at {self.session.endpoint}\n"
            f"  console ({port}), last lines:\n{console_text}\n"
            f"  mqtt {topic!r}, last messages:\n{mqtt_text}\n"
            f"  fix: check the device's supply and cables, the [board_power]/[reset] tables "
            f"and [broker] of {rig.path}; `hil doctor --rig {rig.path}` checks each part"
        )

    def _means_detail(self, means: str) -> str:
        if means.startswith("board") and self.session.board_power is not None:
            return self.session.board_power.describe()
        if self.session.reset is not None:
            return self.session.reset.describe()
        return "none"

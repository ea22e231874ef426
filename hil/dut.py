"""The device under test as the suites see it: console, MQTT and power behind test-plan verbs.

Nothing here knows whether the rig is hardware or the twin; every topic, pattern and limit
comes from the rig's device profile.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from hil.bringup import DeviceState
from hil.console import ConsoleBuffer
from hil.measurements import Measurements
from hil.mqtt import MqttRecord, MqttRecorder
from hil.ota.faults import FaultPlan
from hil.ota.sender import DEFAULT_WINDOW, OtaResult, OtaSender
from hil.ota.window import Window
from hil.power import PowerDriver
from hil.profile import DeviceProfile
from hil.protocol import ota as ota_messages


@dataclass(frozen=True)
class EchoReply:
    """The first two non-status messages the device published after a command, in order."""

    sent: MqttRecord
    first: MqttRecord
    second: MqttRecord

    @property
    def latency_s(self) -> float:
        return self.second.time - self.sent.time


@dataclass(frozen=True)
class PowerCut:
    off_at: float  # time.time() when power went off
    on_at: float  # and when it came back


class NoPowerControl(RuntimeError):
    """The rig has no [power] table; tests that cut power are marked needs("power")."""


class Dut:
    """One device: what the suites send it and what they wait for from it."""

    def __init__(
        self,
        profile: DeviceProfile,
        console: ConsoleBuffer,
        mqtt: MqttRecorder,
        power: PowerDriver | None,
        measurements: Measurements,
        *,
        state: DeviceState | None = None,
        restart_banner: bool = False,
    ) -> None:
        self.profile = profile
        self.state = state  # bring-up's knowledge of the device (its version, how it came up)
        self.restart_banner = restart_banner  # the console survives resets (a UART bridge)
        self.console = console
        self.mqtt = mqtt
        self.power = power
        self.measurements = measurements
        self.cipher = profile.crypto.cipher()
        self.limits = profile.limits
        self.topics = profile.mqtt
        self._online = re.compile(profile.status.online)
        self._heartbeat = re.compile(profile.status.heartbeat)
        self.version: str | None = None

    # -- status ------------------------------------------------------------------------
    def is_status(self, record: MqttRecord) -> bool:
        """A status, heartbeat or OTA answer rather than an echo."""
        text = record.text
        return bool(
            self._online.fullmatch(text)
            or self._heartbeat.fullmatch(text)
            or ota_messages.is_answer_shaped(text)  # malformed too: never taken for an echo
        )

    async def wait_online(self, timeout: float | None = None, *, since: int | None = None) -> str:
        """Wait for `STATUS:ONLINE:<version>` and return the version."""
        record = await self.mqtt.expect(
            self.topics.status_topic,
            self._online,
            self.limits.boot_s if timeout is None else timeout,
            since=since,
        )
        self.version = self._online.fullmatch(record.text)["version"]
        return self.version

    async def current_version(self) -> str:
        """The version the device runs: its last `STATUS:ONLINE` since bring-up.

        A real device says it only on (re)connecting, so without bring-up's restart (or a
        retained message) nothing tells it: that is a rig error (VersionUnknown), not a wait.
        """
        for record in reversed(self.mqtt.received(self.topics.status_topic)):
            m = self._online.fullmatch(record.text)
            if m:
                self.version = m["version"]
                return self.version
        if self.state is None:
            return await self.wait_online(since=0)
        self.version = self.state.require_version()
        return self.version

    async def wait_restart(self, timeout: float | None = None, *, since: int) -> None:
        """Proof the chip restarted after console line `since`: the boot banner where the
        console survives resets, else its port vanishing (all a native USB console shows)."""
        await self.console.expect_restart(
            self.limits.reboot_s if timeout is None else timeout,
            since=since,
            banner=self.restart_banner,
        )

    # -- echo --------------------------------------------------------------------------
    async def send_command(self, payload: str | bytes) -> MqttRecord:
        """Publish a raw payload on the command topic (already encrypted, or deliberately not)."""
        return await self.mqtt.publish(self.topics.command_topic, payload, self.topics.qos)

    async def echo(self, plaintext: str, timeout: float | None = None) -> EchoReply:
        """Send `plaintext` encrypted and collect the device's two answers, in arrival order."""
        return await self.echo_raw(self.cipher.encrypt(plaintext), timeout)

    async def echo_raw(self, payload: str | bytes, timeout: float | None = None) -> EchoReply:
        sent = await self.send_command(payload)
        limit = self.limits.echo_s if timeout is None else timeout
        first = await self.expect_reply(limit, since=sent.index)
        second = await self.expect_reply(limit, since=first.index + 1)
        return EchoReply(sent, first, second)

    async def expect_reply(self, timeout: float, *, since: int) -> MqttRecord:
        """The next message on the status topic that is not a status or OTA answer."""
        return await self.mqtt.expect(
            self.topics.status_topic,
            lambda r: not self.is_status(r),
            timeout,
            since=since,
        )

    def replies_since(self, index: int) -> list[MqttRecord]:
        return [
            r
            for r in self.mqtt.received(self.topics.status_topic, since=index)
            if not self.is_status(r)
        ]

    # -- OTA ---------------------------------------------------------------------------
    async def ota(
        self,
        image: bytes,
        *,
        faults: FaultPlan | None = None,
        window: Window = DEFAULT_WINDOW,
        on_progress=None,
    ) -> OtaResult:
        """Push `image` over MQTT; raises OtaRefused with the device's reason if it says no.

        On success the device reboots into the image: wrap the call and the wait for
        `STATUS:ONLINE` in `console.reboot_expected()`.
        """
        replies: asyncio.Queue[ota_messages.OtaReply] = asyncio.Queue()

        async def publish(payload: str) -> None:
            await self.mqtt.publish(self.topics.firmware_topic, payload, self.topics.qos)

        async def pump(raw: asyncio.Queue[MqttRecord]) -> None:
            while True:
                reply = ota_messages.parse_reply((await raw.get()).text)
                if reply is not None:
                    replies.put_nowait(reply)

        sender = OtaSender.for_profile(
            self.profile, publish, replies, faults=faults, window=window, on_progress=on_progress
        )
        async with self.mqtt.tap(self.topics.status_topic) as raw:
            # The sender runs the pump as a task, fails at once if it dies, always collects it.
            return await sender.push(image, feed=pump(raw))

    # -- power -------------------------------------------------------------------------
    def _power(self) -> PowerDriver:
        if self.power is None:
            raise NoPowerControl("this rig has no [power] table; mark the test needs('power')")
        return self.power

    async def power_off(self) -> float:
        await asyncio.to_thread(self._power().off)
        return time.time()

    async def power_on(self) -> float:
        await asyncio.to_thread(self._power().on)
        return time.time()

    async def power_cut(self, seconds: float) -> PowerCut:
        """Cut the modem's supply for `seconds`; power always comes back, also on cancel."""
        off_at = await self.power_off()
        try:
            await asyncio.sleep(seconds)  # the cut's length is the stimulus itself
        finally:
            on_at = await self.power_on()
        return PowerCut(off_at, on_at)

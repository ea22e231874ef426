"""The ESP32 application: the 14-state machine of PROTOCOL.md, talking to the modem by AT only.

One `Firmware` object is one run of the chip between resets (RAM); `run()` returns when the chip
restarts (OTA, panic, rollback). Flash and the modem outlive it. Faults from SimOptions switch on
the named bugs. Built with `Credentials` it speaks TLS to the broker, set up the way seed 001
sets up a SIM7600 for AWS IoT (its CA, certificate and key into the modem, authmode 2, SNI).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hil.profile import DeviceProfile
from hil.protocol import http_ota
from hil.protocol.crypto import DecryptError
from hil.sim.atclient import AtClient, AtError, AtTimeout
from hil.sim.echo import Echo, is_base64
from hil.sim.flash import Flash, Rollback
from hil.sim.http_ota import HttpOta
from hil.sim.options import SimOptions
from hil.sim.ota_receiver import OtaReceiver, Step
from hil.sim.reset import Reset, banner
from hil.sim.uart import UartEnd

log = logging.getLogger("hil.sim.firmware")

INIT_MODEM = "STATE_INIT_MODEM"
WAIT_NETWORK = "STATE_WAIT_NETWORK"
CONNECT_GPRS = "STATE_CONNECT_GPRS"
UPLOAD_CERTIFICATE = "STATE_UPLOAD_CERTIFICATE"
SETUP_SSL = "STATE_SETUP_SSL"
SETUP_MQTT = "STATE_SETUP_MQTT"
CONNECT_MQTT = "STATE_CONNECT_MQTT"
SUBSCRIBE_MQTT = "STATE_SUBSCRIBE_MQTT"
RUNNING = "STATE_RUNNING"
ERROR = "STATE_ERROR"
STOPPED = "STATE_STOPPED"  # reached only by an explicit stop, which the reference never sends
RECOVER_NETWORK = "STATE_RECOVER_NETWORK"
RECOVER_GPRS = "STATE_RECOVER_GPRS"
RECOVER_MQTT = "STATE_RECOVER_MQTT"

PANIC = "Guru Meditation Error: Core  0 panic'ed (LoadProhibited). Exception was unhandled."
BACKTRACE = "Backtrace: 0x42008a1c:0x3fc9b2f0 0x42009b3e:0x3fc9b310 0x4037c2d1:0x3fc9b330"

APN = "internet"
CA_NAME = "ca.pem"
CERT_NAME = "clientcert.pem"
KEY_NAME = "clientkey.pem"
NETWORK_POLLS = 15  # registration polls, RETRY_DELAY apart: attaching takes longer than a command
PUBLISH_TIMEOUT_S = 60  # passed in AT+CMQTTPUB; the module gives up on the broker after it
RESULT_FLOOR_DELAYS = 4  # a network result is never waited for less than this many retry delays
MIN_AT_TIMEOUT_S = 0.5
BOOT_LOOP_S = 0.3  # from reset to the bootloader giving up on every app slot


def dummy_ca_pem() -> bytes:
    """A PEM-shaped CA file for AT+CCERTDOWN (the twin's broker link is plain TCP)."""
    body = base64.b64encode(b"".join(hashlib.sha256(bytes([i])).digest() for i in range(24)))
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


@dataclass(frozen=True)
class Credentials:
    """What a firmware built for a TLS broker carries: the CA it trusts, and its own
    certificate and key when the broker wants clients to present one."""

    ca: bytes
    cert: bytes | None = None
    key: bytes | None = field(default=None, repr=False)


class StepFailed(Exception):
    """A step's answer was not the one wanted (the modem answered, but not OK)."""


class LinkLost(Exception):
    """The modem stopped answering or the MQTT link dropped while running."""


class Restart(Exception):
    """The chip restarts (esp_restart or a panic)."""


PUBLISH_RESULT = "+CMQTTPUB:"
CONNECT_REFUSED = range(27, 32)  # +CMQTTCONNECT errors for a CONNACK refusal (modem_facts.md)


def _refused(result: str) -> bool:
    """Whether a `+CMQTTCONNECT: <client>,<err>` result is the broker refusing the CONNECT."""
    code = result.rpartition(",")[2]
    return code.isdigit() and int(code) in CONNECT_REFUSED


class Firmware:
    def __init__(
        self,
        *,
        profile: DeviceProfile,
        options: SimOptions,
        uart: UartEnd,
        flash: Flash,
        console: Callable[[str], None],
        broker: tuple[str, int],
        username: str | None,
        password: str | None,
        reset: Reset,
        tls: Credentials | None = None,
    ) -> None:
        self._profile = profile
        self._fw = profile.firmware
        self._faults = set(options.faults)
        self._flash = flash
        self._console = console
        self._broker = broker
        self._username = username
        self._password = password
        self._reset = reset
        self._tls = tls
        self._at = AtClient(uart, self._on_urc, self._on_message, late_results=(PUBLISH_RESULT,))
        # Messages in arrival order, or the news that the link is gone (raised where it is read).
        self._inbox: asyncio.Queue[tuple[str, bytes] | LinkLost] = asyncio.Queue()
        # Publishes whose +CMQTTPUB result has not come yet, oldest first (the module answers
        # them in order), as the result deadline less the UART's busy time when it was made.
        self._unconfirmed: deque[float] = deque()
        self._echo = Echo(profile.crypto, self._faults)
        self._ota = OtaReceiver(profile.ota, self._faults)
        self._http = HttpOta(
            profile, self._faults, self._cmd, self._publish, self._say, self._running_version
        )
        self._rolled_back: Rollback | None = None  # the app given up on, not yet reported
        self._pending_status: list[str] = []
        self._client_id: str | None = None  # kept for good only by the takeover_loop bug
        self._state = INIT_MODEM
        self._led = False
        self._loop = asyncio.get_running_loop()
        self._started_at = self._loop.time()
        self._at_timeout = max(MIN_AT_TIMEOUT_S, self._fw.retry_delay_s)
        # Results that cross the network (+CMQTTPUB, +CMQTTCONNECT, ...) come within the module's
        # own publish timeout (scaled like the twin's modem), plus a retry delay for the answer
        # to arrive; past that the modem is taken for dead, as when its power was cut.
        self._result_timeout = max(
            PUBLISH_TIMEOUT_S * options.time_scale + self._fw.retry_delay_s,
            RESULT_FLOOR_DELAYS * self._fw.retry_delay_s,
        )

    # -- chip lifecycle -----------------------------------------------------------------------

    async def run(self) -> Reset:
        """Boot and run until the chip restarts; returns the restart's kind."""
        for line in banner(self._reset, download=False):
            self._say(line)
        boot = self._flash.boot()
        for line in boot.lines:
            self._say(line)
        if boot.app is None:
            await asyncio.sleep(BOOT_LOOP_S)  # bootloader_reset() after its ROM and flash reads
            return Reset.SW_SYS
        self._say(f"Firmware {boot.app.version} starting")
        if self._flash.self_test_fails() and "http_no_rollback" not in self._faults:
            self._say("OTA: self-test failed, rolling back")
            self._flash.rollback()
            self._say("Rebooting...")
            return Reset.SW_CPU
        self._flash.confirm()
        self._rolled_back = self._flash.unreported_rollback()
        self._lcd("Booting...")
        reader = self._loop.create_task(self._at.run())
        try:
            await self._machine()
        except Restart:
            return Reset.SW_CPU
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _machine(self) -> None:
        handlers: dict[str, Callable[[], Awaitable[str]]] = {
            INIT_MODEM: lambda: self._steps(WAIT_NETWORK, self._init_modem),
            WAIT_NETWORK: lambda: self._steps(CONNECT_GPRS, self._wait_registered),
            CONNECT_GPRS: lambda: self._steps(UPLOAD_CERTIFICATE, self._gprs),
            UPLOAD_CERTIFICATE: lambda: self._steps(SETUP_SSL, self._certificate),
            SETUP_SSL: lambda: self._steps(SETUP_MQTT, self._ssl),
            SETUP_MQTT: lambda: self._steps(CONNECT_MQTT, self._mqtt_setup),
            CONNECT_MQTT: lambda: self._steps(SUBSCRIBE_MQTT, self._mqtt_connect),
            SUBSCRIBE_MQTT: lambda: self._steps(RUNNING, self._subscribe),
            RUNNING: self._running,
            ERROR: self._error,
            RECOVER_NETWORK: self._recover_network,
            RECOVER_GPRS: lambda: self._steps(RECOVER_MQTT, self._gprs),
            RECOVER_MQTT: self._recover_mqtt,
        }
        while True:
            self._goto(await handlers[self._state]())

    def _goto(self, state: str) -> None:
        if state != self._state:
            self._say(f"State: {self._state} -> {state}")
            self._state = state

    def _say(self, line: str) -> None:
        log.info("console: %s", line)
        self._console(line)

    def _lcd(self, text: str) -> None:
        self._say(f"LCD: {text}")

    # -- steps with retries -------------------------------------------------------------------

    async def _steps(self, success: str, *steps: Callable[[], Awaitable[None]]) -> str:
        """Run `steps` in order, each retried MAX_RETRIES times; STATE_ERROR if one gives up."""
        for step in steps:
            if not await self._retry(step):
                return ERROR
        return success

    async def _retry(self, step: Callable[[], Awaitable[None]], attempts: int = 0) -> bool:
        attempts = attempts or self._fw.max_retries
        for attempt in range(attempts):
            try:
                await step()
                return True
            except (AtError, AtTimeout, StepFailed) as exc:
                log.info("%s: %s (attempt %d/%d)", self._state, exc, attempt + 1, attempts)
            if attempt + 1 < attempts:
                await asyncio.sleep(self._fw.retry_delay_s)
        return False

    async def _cmd(
        self,
        line: str,
        data: bytes | None = None,
        wait_for: str | None = None,
        received: bytearray | None = None,
    ) -> list[str]:
        return await self._at.command(
            line,
            self._at_timeout,
            data=data,
            wait_for=wait_for,
            result_timeout=self._result_timeout,
            received=received,
        )

    async def _init_modem(self) -> None:
        await self._cmd("AT")
        await self._cmd("ATE0")
        await self._cmd("AT+CMEE=2")
        if "+CPIN: READY" not in await self._cmd("AT+CPIN?"):
            raise StepFailed("SIM not ready")

    async def _wait_registered(self) -> None:
        async def registered() -> None:
            for command, prefix in (("AT+CREG?", "+CREG: "), ("AT+CEREG?", "+CEREG: ")):
                for line in await self._cmd(command):
                    if line.startswith(prefix) and line.split(",")[-1].strip() in ("1", "5"):
                        return
            raise StepFailed("not registered yet")

        if not await self._retry(registered, NETWORK_POLLS):
            raise StepFailed("no network registration")
        await self._cmd("AT+CSQ")

    async def _gprs(self) -> None:
        await self._cmd(f'AT+CGDCONT=1,"IP","{APN}"')
        await self._cmd("AT+CGACT=1,1")
        try:
            lines = await self._cmd("AT+NETOPEN", wait_for="+NETOPEN:")
        except AtError as exc:
            if not any("already opened" in line for line in exc.lines):
                raise
        else:
            if lines[-1] != "+NETOPEN: 0":
                raise StepFailed(lines[-1])
        await self._cmd("AT+CGPADDR=1")

    async def _certificate(self) -> None:
        """Download the files the modem does not hold yet (its flash keeps them)."""
        listed = await self._cmd("AT+CCERTLIST")
        for name, pem in self._certificates():
            if f'+CCERTLIST: "{name}"' not in listed:
                await self._cmd(f'AT+CCERTDOWN="{name}",{len(pem)}', data=pem)

    def _certificates(self) -> list[tuple[str, bytes]]:
        tls = self._tls
        if tls is None:
            return [(CA_NAME, dummy_ca_pem())]
        files = [] if "tls_no_verify" in self._faults else [(CA_NAME, tls.ca)]
        if tls.cert is not None and tls.key is not None:
            files += [(CERT_NAME, tls.cert), (KEY_NAME, tls.key)]
        return files

    async def _ssl(self) -> None:
        """SSL context 0. The bugs: `tls_no_verify` configures no CA and so asks for no server
        authentication (authmode 3 with a client pair, as LilyGO's TinyGsmMqttA76xx.h picks
        when it is given no CA); `no_sni` never sends "enableSNI"."""
        names = [name for name, _ in self._certificates()]
        verify, pair = CA_NAME in names, CERT_NAME in names
        authmode = {(True, True): 2, (True, False): 1, (False, True): 3, (False, False): 0}
        settings = ['"sslversion",0,4', f'"authmode",0,{authmode[verify, pair]}']
        if verify:
            settings.append(f'"cacert",0,"{CA_NAME}"')
        if pair:
            settings += [f'"clientcert",0,"{CERT_NAME}"', f'"clientkey",0,"{KEY_NAME}"']
        if "no_sni" not in self._faults:
            settings.append('"enableSNI",0,1')
        settings.append('"ignorelocaltime",0,1')
        for setting in settings:
            await self._cmd(f"AT+CSSLCFG={setting}")

    async def _mqtt_setup(self) -> None:
        # Whatever a previous run left in the modem (it survives an ESP32 restart) goes first.
        for line, result in (
            ("AT+CMQTTDISC=0,120", "+CMQTTDISC:"),
            ("AT+CMQTTREL=0", None),
            ("AT+CMQTTSTOP", "+CMQTTSTOP:"),
        ):
            with contextlib.suppress(AtError):
                await self._cmd(line, wait_for=result)
        try:
            await self._cmd("AT+CMQTTSTART", wait_for="+CMQTTSTART:")
        except AtError as exc:
            if "+CMQTTSTART: 23" not in exc.lines:
                raise
        millis = int((self._loop.time() - self._started_at) * 1000)
        client_id = f"{self._profile.mqtt.client_id_prefix}{millis}"
        if "takeover_loop" in self._faults:  # the bug: one id for good, taken back at once
            client_id = self._client_id = self._client_id or client_id
        await self._cmd(f'AT+CMQTTACCQ=0,"{client_id}",{int(self._tls is not None)}')
        if "mqtt_v31" not in self._faults:
            await self._cmd(f'AT+CMQTTCFG="version",0,{self._profile.mqtt.protocol_level}')
        await self._cmd("AT+CMQTTSSLCFG=0,0")

    async def _mqtt_connect(self) -> None:
        self._drop_stale_losses()
        host, port = self._broker
        line = f'AT+CMQTTCONNECT=0,"tcp://{host}:{port}",{self._profile.mqtt.keepalive_s},1'
        if self._username is not None:
            line += f',"{self._username}","{self._password or ""}"'
        result = (await self._cmd(line, wait_for="+CMQTTCONNECT:"))[-1]
        if result != "+CMQTTCONNECT: 0,0":
            if "no_reconnect_after_refusal" in self._faults and _refused(result):
                self._goto(STOPPED)  # the bug: a broker's "no" taken as final, until a reset
                await asyncio.Event().wait()
            raise StepFailed(result)
        self._lcd("MQTT Connected")

    async def _subscribe(self) -> None:
        qos = self._profile.mqtt.qos
        for topic in (self._profile.mqtt.command_topic, self._profile.mqtt.firmware_topic):
            raw = topic.encode()
            await self._cmd(f"AT+CMQTTSUBTOPIC=0,{len(raw)},{qos}", data=raw)
            result = (await self._cmd("AT+CMQTTSUB=0", wait_for="+CMQTTSUB:"))[-1]
            if result != "+CMQTTSUB: 0,0":
                raise StepFailed(result)

    async def _publish(self, payload: str, qos: int | None = None) -> None:
        """Hand one message to the module; returns at its OK.

        The `+CMQTTPUB: 0,<err>` result follows once the broker acknowledged (a cellular round
        trip at QoS 1). Waiting for it here would hold every answer, and so every OTA chunk, a
        round trip; it is collected as a URC instead (`_on_urc`), within the publish timeout.
        """
        topic = self._profile.mqtt.status_topic.encode()
        data = payload.encode()
        qos = self._profile.mqtt.qos if qos is None else qos
        await self._cmd(f"AT+CMQTTTOPIC=0,{len(topic)}", data=topic)
        if data:  # the module refuses a zero length; a publish with no payload set sends none
            await self._cmd(f"AT+CMQTTPAYLOAD=0,{len(data)}", data=data)
        await self._cmd(f"AT+CMQTTPUB=0,{qos},{PUBLISH_TIMEOUT_S}")
        self._unconfirmed.append(self._loop.time() + self._result_timeout - self._at.rx_busy_s)

    def _result_deadline(self) -> float | None:
        """When the oldest publish's result is overdue: the module queues it behind the URCs
        it already holds, so the UART time spent bringing those extends the wait, as for
        any answer (AtClient._wait)."""
        if not self._unconfirmed:
            return None
        return self._unconfirmed[0] + self._at.rx_busy_s

    # -- recovery -----------------------------------------------------------------------------

    async def _error(self) -> str:
        await asyncio.sleep(self._fw.retry_delay_s)
        return RECOVER_NETWORK

    async def _recover_network(self) -> str:
        self._say("Modem: PWRKEY pulse")
        if "no_recovery" in self._faults:
            await asyncio.Event().wait()  # the bug: waits for a modem event that never comes
        return await self._steps(RECOVER_GPRS, self._init_modem, self._wait_registered)

    async def _recover_mqtt(self) -> str:
        after = RUNNING if "no_resubscribe" in self._faults else SUBSCRIBE_MQTT
        return await self._steps(
            after, self._certificate, self._ssl, self._mqtt_setup, self._mqtt_connect
        )

    # -- running ------------------------------------------------------------------------------

    def _on_urc(self, line: str) -> None:
        if line.startswith("+CMQTTCONNLOST") and "no_keepalive_check" in self._faults:
            log.info("modem: %s (not acted on)", line)  # the bug: only a failed command tells
            return
        # RDY out of the blue: the modem restarted (power came back), its MQTT link is gone.
        if line == "RDY" or line.startswith(("+CMQTTCONNLOST", "+CMQTTNONET")):
            log.info("modem: %s", line)
            self._inbox.put_nowait(LinkLost(f"the modem reported {line}"))
        elif line.startswith(PUBLISH_RESULT) and self._unconfirmed:  # else a dead session's
            self._unconfirmed.popleft()
            if line != f"{PUBLISH_RESULT} 0,0":
                log.info("modem: %s", line)
                self._inbox.put_nowait(LinkLost(f"publish failed: {line}"))

    def _on_message(self, topic: str, payload: bytes) -> None:
        self._inbox.put_nowait((topic, payload))

    def _drop_stale_losses(self) -> None:
        """Forget link-loss reports about a connection that is being replaced."""
        kept = []
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if not isinstance(item, LinkLost):
                kept.append(item)
        for item in kept:
            self._inbox.put_nowait(item)

    async def _running(self) -> str:
        try:
            if self._rolled_back is not None:  # said once, noted in NVS once it is out
                rollback = self._profile.http_ota.rollback
                await self._publish(http_ota.fill(rollback, version=self._rolled_back.app.version))
                self._flash.rollback_reported(self._rolled_back)
                self._rolled_back = None
            await self._publish(f"STATUS:ONLINE:{self._flash.running.version}")
            while self._pending_status:
                await self._publish(self._pending_status.pop(0))
            if self._http.pending:
                self._install(await self._http.resume())
            self._lcd("Online")
            await self._serve()
        except (LinkLost, AtError, AtTimeout) as exc:
            log.info("link lost: %s", exc)
        self._unconfirmed.clear()  # their results, if any ever come, belong to a dead session
        self._say("Network lost")
        if self._ota.active:
            step = self._ota.abort("network")
            self._pending_status += step.replies
            for line in step.console:
                self._say(line)
        return RECOVER_MQTT if "takeover_loop" in self._faults else RECOVER_NETWORK

    async def _serve(self) -> None:
        """Answer messages, check the modem, beat the heart, until the link is lost.

        The modem is probed with `AT` only after it has been silent for a retry delay: anything
        it sends proves it alive, and a probe in the middle of a stream of chunks would wait
        behind a chunk's URC block for nothing.
        """
        next_beat = self._loop.time() + self._fw.heartbeat_s
        while True:
            next_check = self._at.last_rx + self._fw.retry_delay_s
            deadlines = [next_check, next_beat]
            ota_deadline = self._ota.deadline()
            if ota_deadline is not None:
                deadlines.append(ota_deadline)
            result_deadline = self._result_deadline()
            if result_deadline is not None:
                deadlines.append(result_deadline)
            timeout = max(0.0, min(deadlines) - self._loop.time())
            try:
                item = await asyncio.wait_for(self._inbox.get(), timeout)
            except TimeoutError:
                item = ()
            if isinstance(item, LinkLost):
                raise item
            if item:
                await self._handle([item, *self._waiting()])
            now = self._loop.time()
            result_deadline = self._result_deadline()
            if result_deadline is not None and now >= result_deadline:
                raise AtTimeout(f"no {PUBLISH_RESULT} result within {self._result_timeout:.1f} s")
            if ota_deadline is not None and now >= ota_deadline and self._ota.active:
                await self._ota_step(self._ota.abort("timeout"))
            if now >= self._at.last_rx + self._fw.retry_delay_s:
                await self._cmd("AT")
            if now >= next_beat:
                await self._publish(f"STATUS:HEARTBEAT:{int(now - self._started_at)}")
                next_beat = now + self._fw.heartbeat_s

    def _waiting(self) -> list[tuple[str, bytes] | LinkLost]:
        """Everything already in the receive queue, taken at once."""
        items = []
        while not self._inbox.empty():
            items.append(self._inbox.get_nowait())
        return items

    async def _handle(self, items: list[tuple[str, bytes] | LinkLost]) -> None:
        """Handle messages in order; OTA messages in a row are handled as one batch."""
        chunks: list[bytes] = []
        for item in items:
            if isinstance(item, LinkLost):
                raise item
            topic, payload = item
            if topic == self._profile.mqtt.firmware_topic:
                url = self._http.requested(payload)
                if url is None:
                    chunks.append(payload)
                    continue
                await self._ota_batch(chunks)
                chunks = []
                self._install(await self._http.update(url))
                continue
            await self._ota_batch(chunks)
            chunks = []
            if topic == self._profile.mqtt.command_topic:
                await self._on_command(payload)
        await self._ota_batch(chunks)

    async def _ota_batch(self, payloads: list[bytes]) -> None:
        """Write the chunks that have arrived, then answer them.

        While the firmware publishes one answer, the next chunks arrive; writing them all and
        publishing only the PROGRESS of the last chunk written in a row (PROGRESS is cumulative)
        keeps the AT exchanges from falling behind the UART. REQUESTs, the answers to
        duplicates and every other answer are published one for one, in order.
        """
        batch = Step()
        for payload in payloads:
            step = self._ota.handle(payload, self._loop.time())
            if step.written and batch.written:
                batch.replies.pop()  # the previous chunk's PROGRESS, superseded by this one
            batch.replies += step.replies
            batch.console += step.console
            batch.written = step.written
            if step.image is not None:
                batch.image = step.image
                break  # the chip restarts: whatever came after is lost with its RAM
        await self._ota_step(batch)

    async def _on_command(self, payload: bytes) -> None:
        if "crash_on_bad_base64" in self._faults and not is_base64(payload.strip()):
            self._say(PANIC)
            self._say(BACKTRACE)
            self._say("Rebooting...")
            raise Restart
        try:
            answer = self._echo.answer(payload.strip())
        except DecryptError as exc:
            log.info("echo refused: %s", exc)
            self._say("Decrypt failed")
            return
        for reply in answer.replies:
            await self._publish(reply)
        self._lcd(self._echo.lcd_text(answer.plaintext))
        self._led = not self._led
        self._say(f"LED: {'ON' if self._led else 'OFF'}")

    def _running_version(self) -> str:
        return self._flash.running.version

    def _install(self, image: bytes | None) -> None:
        """Write a verified HTTP OTA image to the other slot and restart into it."""
        if image is not None:
            self._flash.stage(image)
            self._say("Rebooting...")
            raise Restart

    async def _ota_step(self, step: Step) -> None:
        for line in step.console:
            self._say(line)
        for reply in step.replies:
            await self._publish(reply)
        if step.image is not None:
            self._flash.stage(step.image)
            self._say("Rebooting...")
            raise Restart

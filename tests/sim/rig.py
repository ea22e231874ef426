"""Outside-in access to a running twin: console via pyserial, MQTT via mosquitto clients,
power via LCUS frames, AES via openssl. Nothing here imports the twin's internals."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import serial

from hil.power.lcus import encode_frame
from hil.profile import DeviceProfile
from hil.protocol import ota
from hil.sim.process import TwinPorts


class ConsoleLog:
    """Reads the console in a thread and follows the port across re-creation (reboots)."""

    POLL_S = 0.02

    def __init__(self, link: Path) -> None:
        self.link = link
        self.lines: list[str] = []
        self.ports_seen: list[str] = []  # the pty behind the symlink at each (re)open
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                port = serial.Serial(str(self.link), 115200, timeout=self.POLL_S)
            except (serial.SerialException, OSError):
                time.sleep(self.POLL_S)
                continue
            with self._cond:
                self.ports_seen.append(str(self.link.resolve()))
            partial = b""
            try:
                while not self._stop.is_set():
                    partial += port.read(4096)
                    *done, partial = partial.split(b"\n")
                    if done:
                        with self._cond:
                            self.lines += [d.decode(errors="replace").rstrip("\r") for d in done]
                            self._cond.notify_all()
            except (serial.SerialException, OSError, TypeError):
                pass  # the port vanished: the chip is rebooting
            finally:
                port.close()

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def expect(self, pattern: str, timeout: float, after: int = 0) -> tuple[int, re.Match[str]]:
        """The first line from index `after` matching `pattern`; AssertionError on deadline."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index in range(after, len(self.lines)):
                    m = regex.search(self.lines[index])
                    if m:
                        return index, m
                after = max(after, len(self.lines))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"console: no line matching {pattern!r} within {timeout} s; last lines:\n"
                        + "\n".join(self.lines[-25:])
                    )
                self._cond.wait(left)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


class StatusWatch:
    """A mosquitto_sub on the device's status topic; payloads in arrival order."""

    def __init__(self, host: str, port: int, topic: str, timeout: float = 10) -> None:
        self.messages: list[str] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._proc = subprocess.Popen(
            # -F %p: one line per message, an empty one for an empty payload (legal MQTT).
            [
                "stdbuf",
                "-oL",
                "mosquitto_sub",
                "-d",
                "-h",
                host,
                "-p",
                str(port),
                "-t",
                topic,
                "-q",
                "1",
                "-F",
                "%p",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._subscribed.wait(timeout):
            self.close()
            raise RuntimeError(f"mosquitto_sub did not subscribe to {topic} within {timeout} s")

    def _run(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            line = raw.rstrip("\n")
            if line.startswith("Client ") or line.startswith("Subscribed"):
                if "SUBACK" in line:
                    self._subscribed.set()
                continue
            with self._cond:
                self.messages.append(line)
                self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.messages)

    def expect(
        self, match: str | Callable[[str], bool], timeout: float, after: int = 0
    ) -> tuple[int, str]:
        test = match if callable(match) else (lambda m: re.fullmatch(match, m) is not None)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index in range(after, len(self.messages)):
                    if test(self.messages[index]):
                        return index, self.messages[index]
                after = max(after, len(self.messages))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"status topic: nothing matching {match!r} within {timeout} s; got "
                        f"{self.messages[-15:]}"
                    )
                self._cond.wait(left)

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(5)
        if self._proc.stdout:
            self._proc.stdout.close()


def publish(host: str, port: int, topic: str, payloads: list[str]) -> None:
    """Publish each payload at QoS 1, in order, through one mosquitto_pub (one line each)."""
    subprocess.run(
        ["mosquitto_pub", "-h", host, "-p", str(port), "-t", topic, "-q", "1", "-l"],
        input="".join(p + "\n" for p in payloads),
        text=True,
        check=True,
        timeout=30,
    )


def openssl_encrypt(plaintext: str, key: bytes, iv: bytes) -> str:
    enc = subprocess.run(
        ["openssl", "enc", "-aes-256-cbc", "-K", key.hex(), "-iv", iv.hex()],
        input=plaintext.encode(),
        capture_output=True,
        check=True,
    ).stdout
    b64 = subprocess.run(["base64", "-w0"], input=enc, capture_output=True, check=True)
    return b64.stdout.decode()


def openssl_decrypt(b64: str, key: bytes, iv: bytes) -> bytes | None:
    """The plaintext, or None when openssl refuses it (bad padding)."""
    raw = subprocess.run(
        ["base64", "-d"], input=b64.encode(), capture_output=True, check=True
    ).stdout
    proc = subprocess.run(
        ["openssl", "enc", "-d", "-aes-256-cbc", "-K", key.hex(), "-iv", iv.hex()],
        input=raw,
        capture_output=True,
    )
    return proc.stdout if proc.returncode == 0 else None


@dataclass
class VirtualRig:
    """A running twin seen from outside, with the limits the tests wait by."""

    ports: TwinPorts
    profile: DeviceProfile
    host: str
    port: int
    console: ConsoleLog
    status: StatusWatch
    channel: int = 1
    timeout: float = 15.0

    @property
    def key(self) -> bytes:
        return self.profile.crypto.key.encode()

    @property
    def iv(self) -> bytes:
        return self.profile.crypto.iv.encode()

    def command(self, *payloads: str) -> None:
        publish(self.host, self.port, self.profile.mqtt.command_topic, list(payloads))

    def firmware(self, *payloads: str) -> None:
        publish(self.host, self.port, self.profile.mqtt.firmware_topic, list(payloads))

    def wait_online(self, version: str | None = None, after: int = 0) -> int:
        wanted = re.escape(version) if version else r"\S+"
        pattern = f"STATUS:ONLINE:{wanted}"
        return self.status.expect(pattern, self.timeout, after)[0]

    def modem_power(self, on: bool) -> None:
        """Normally closed wiring: energizing the coil cuts the modem's supply."""
        with serial.Serial(str(self.ports.relay), 9600, timeout=1) as relay:
            relay.write(encode_frame(self.channel, not on))
            relay.flush()

    def ota_push(self, image: bytes, chunks: list[int] | None = None) -> int:
        """BEGIN (wait READY), the chunks (all, or the numbers given), END; returns the mark."""
        mark = self.status.mark()
        self.firmware(ota.begin(len(image)))
        self.status.expect(rf"OTA:READY:{len(image)}", self.timeout, mark)
        parts = ota.split_image(image, self.profile.ota.chunk_data_size)
        numbers = range(len(parts)) if chunks is None else chunks
        self.firmware(*(ota.encode_chunk(n, parts[n]) for n in numbers))
        return mark

"""The device profile: the firmware contract of PROTOCOL.md as data, so labs edit data, not code."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, ClassVar

from hil import schema
from hil.protocol import http_ota
from hil.protocol.crypto import Cipher

PROFILE_NAME = re.compile(r"[A-Za-z0-9_-]+")
MAX_CHUNK_DATA = 508  # PROTOCOL.md: 512 bytes per chunk, 4 of them the chunk number
TOPIC = "an MQTT topic without wildcards (+ or #)"


def _topic(value: str, name: str) -> None:
    if not value or "+" in value or "#" in value or "\0" in value:
        raise schema.ConfigError(name, f"got {value!r}, expected {TOPIC}")


@dataclass(frozen=True)
class MqttContract:
    command_topic: str = "server_cmd"
    firmware_topic: str = "firmware/update"
    status_topic: str = "esp32_status"
    qos: int = 1
    protocol_level: int = 4
    client_id_prefix: str = "ESP32_SIM7600_"
    keepalive_s: int = 60

    def __post_init__(self) -> None:
        with schema.Checks() as check:
            for name in ("command_topic", "firmware_topic", "status_topic"):
                check(_topic, getattr(self, name), name)
            check(schema.whole_range, self.qos, "qos", 0, 2, "an MQTT QoS")
            check(schema.one_of, self.protocol_level, "protocol_level", (3, 4, 5))
            # MQTT's keepalive is 16 bits; 0 (no keepalive) would never detect a lost modem.
            check(
                schema.whole_range,
                self.keepalive_s,
                "keepalive_s",
                1,
                65535,
                "a keepalive in seconds",
            )


@dataclass(frozen=True)
class CryptoContract:
    key: str = ""
    iv: str = ""
    key_env: str = ""
    iv_env: str = ""
    echo_prefix: str = "ESP32_"
    max_plaintext: int = 256
    lcd_prefix: str = "MQTT Msg:"

    def __post_init__(self) -> None:
        with schema.Checks() as check:
            check(_length, self.key, "key", 32, "an AES-256 key")
            check(_length, self.iv, "iv", 16, "an AES-CBC IV")
            check(
                schema.whole_range, self.max_plaintext, "max_plaintext", 1, what="a size in bytes"
            )

    def cipher(self) -> Cipher:
        """The cipher, with key and IV from the named environment variables when given."""
        key = _secret(self.key_env, self.key, "crypto.key")
        iv = _secret(self.iv_env, self.iv, "crypto.iv")
        return Cipher(key.encode(), iv.encode())


def _known_states(path: list[str], states: list[str], name: str) -> None:
    """The recovery path runs through states the firmware has (when the profile lists them)."""
    unknown = [s for s in path if states and s not in states]
    if unknown:
        raise schema.ConfigError(name, f"got {unknown[0]!r}, expected one of firmware.states")


def _length(value: str, name: str, size: int, what: str) -> None:
    """An inline key or IV is checked at load; one from the environment when it is read."""
    if value and len(value.encode()) != size:
        raise schema.ConfigError(
            name, f"got {len(value.encode())} bytes, expected {what} of {size} bytes"
        )


def _secret(env: str, inline: str, key: str) -> str:
    if env:
        value = os.environ.get(env)
        if value is None:
            raise schema.ConfigError(f"{key}_env", f"environment variable {env} is not set")
        return value
    if not inline:
        raise schema.ConfigError(key, f"no value: set {key} or {key}_env")
    return inline


@dataclass(frozen=True)
class OtaContract:
    chunk_data_size: int = 508
    partition_size: int = 1966080
    chunk_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        with schema.Checks() as check:
            size = "a chunk's data size in bytes (512 per chunk less the 4-byte number)"
            check(
                schema.whole_range, self.chunk_data_size, "chunk_data_size", 1, MAX_CHUNK_DATA, size
            )
            check(
                schema.whole_range, self.partition_size, "partition_size", 1, what="a size in bytes"
            )
            check(schema.positive, self.chunk_timeout_s, "chunk_timeout_s")


def _template(value: str, name: str, fields: tuple[str, ...]) -> None:
    """A message template with exactly the placeholders the harness fills in or reads."""
    try:
        found = http_ota.placeholders(value)
    except ValueError as exc:
        raise schema.ConfigError(name, f"got {value!r}: {exc}") from None
    if sorted(found) != sorted(fields) or not value.strip():
        wanted = ", ".join(f"{{{f}}}" for f in fields) or "no placeholder"
        raise schema.ConfigError(name, f"got {value!r}, expected a message with {wanted}")


def _path(value: str, name: str) -> None:
    if not value.startswith("/") or any(c in value for c in ' "?#\r\n'):
        raise schema.ConfigError(name, f"got {value!r}, expected a URL path such as /version")


@dataclass(frozen=True)
class HttpOtaContract:
    """HTTP OTA with version check and rollback (seed 003): the device is told a server's URL
    on the firmware topic, reads `version_path` there, downloads `image_path` with range
    requests when that version is newer, verifies it, boots it, and rolls back when it fails
    its self-test. Each message is a template ({name} placeholders); the server the suites
    start listens on `server_host`, which must be an address the device reaches."""

    enabled: bool = False
    url: str = "OTA:URL:{url}"
    version_path: str = "/version"
    image_path: str = "/firmware.bin"
    checking: str = "OTA:HTTP:CHECKING"
    refused: str = "OTA:HTTP:REFUSED:not newer ({running} >= {offered})"
    downloading: str = "OTA:HTTP:DOWNLOADING:{received}/{total}"
    resumed: str = "OTA:HTTP:RESUMED:{at}"
    failed: str = "OTA:HTTP:FAILED:{reason}"
    rollback: str = "OTA:ROLLBACK:{version}"
    server_host: str = "127.0.0.1"
    server_port: int = 0
    download_s: float = 300.0

    FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {
        "url": ("url",),
        "checking": (),
        "refused": ("running", "offered"),
        "downloading": ("received", "total"),
        "resumed": ("at",),
        "failed": ("reason",),
        "rollback": ("version",),
    }

    def __post_init__(self) -> None:
        with schema.Checks() as check:
            for name, fields in self.FIELDS.items():
                check(_template, getattr(self, name), name, fields)
            check(_path, self.version_path, "version_path")
            check(_path, self.image_path, "image_path")
            check(schema.nonempty, self.server_host, "server_host", "host name or address")
            check(schema.port, self.server_port, "server_port", free=True)
            check(schema.positive, self.download_s, "download_s")


@dataclass(frozen=True)
class StatusContract:
    online: str = r"^STATUS:ONLINE:(?P<version>\S{1,31})$"
    heartbeat: str = r"^STATUS:HEARTBEAT:(?P<uptime>[0-9]{1,10})$"

    def __post_init__(self) -> None:
        with schema.Checks() as check:  # the harness reads these groups
            check(schema.pattern, self.online, "online", ("version",))
            check(schema.pattern, self.heartbeat, "heartbeat", ("uptime",))


@dataclass(frozen=True)
class ConsoleContract:
    baud: int = 115200
    boot: str = ""
    firmware_start: str = ""
    state: str = ""
    network_lost: str = ""
    lcd: str = ""
    led: str = ""
    decrypt_failed: str = ""
    ota_chunk: str = ""
    ota_complete: str = ""
    ota_failed: str = ""
    rebooting: str = ""
    panic: str = ""

    # The groups the harness and the suites read from a line; a pattern left "" is not used.
    GROUPS: ClassVar[dict[str, tuple[str, ...]]] = {
        "firmware_start": ("version",),
        "state": ("dst",),
        "lcd": ("text",),
        "led": ("state",),
    }

    def __post_init__(self) -> None:
        with schema.Checks() as check:
            check(schema.whole_range, self.baud, "baud", 1, what="a baud rate")
            for name, value in vars(self).items():
                if isinstance(value, str) and value:
                    check(schema.pattern, value, name, self.GROUPS.get(name, ()))


@dataclass(frozen=True)
class FirmwareContract:
    max_retries: int = 3
    retry_delay_s: float = 2.0
    heartbeat_s: float = 30.0
    states: list[str] = field(default_factory=list)
    recovery_path: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        with schema.Checks() as check:
            check(
                schema.whole_range, self.max_retries, "max_retries", 1, what="a number of attempts"
            )
            check(schema.positive, self.retry_delay_s, "retry_delay_s")
            check(schema.positive, self.heartbeat_s, "heartbeat_s")
            check(_known_states, self.recovery_path, self.states, "recovery_path")

    @property
    def retry_budget_s(self) -> float:
        """How long one step keeps retrying before the firmware gives it up."""
        return self.max_retries * self.retry_delay_s


@dataclass(frozen=True)
class Limits:
    boot_s: float = 120.0
    recovery_s: float = 90.0
    detect_s: float = 75.0
    echo_s: float = 10.0
    ota_reply_s: float = 20.0
    ota_retries: int = 10
    reboot_s: float = 60.0

    def __post_init__(self) -> None:
        with schema.Checks() as check:
            for name, value in vars(self).items():
                if name.endswith("_s"):
                    check(schema.positive, value, name)
            # 0 is a sender that never retransmits, which is a choice; a negative is not.
            check(
                schema.whole_range,
                self.ota_retries,
                "ota_retries",
                0,
                what="a number of retransmissions",
            )


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    mqtt: MqttContract
    crypto: CryptoContract
    ota: OtaContract
    status: StatusContract
    console: ConsoleContract
    firmware: FirmwareContract
    limits: Limits
    http_ota: HttpOtaContract = field(default_factory=HttpOtaContract)


def shipped_profiles() -> list[str]:
    return sorted(
        p.name.removesuffix(".toml")
        for p in resources.files("hil.profiles").iterdir()
        if p.name.endswith(".toml")
    )


def builtin_profile_data(name: str) -> dict[str, Any]:
    """The raw data of a profile shipped in the package.

    Only a plain name is looked up: a rig's `name` must not reach files outside the package.
    """
    shipped = shipped_profiles()
    if not isinstance(name, str) or not PROFILE_NAME.fullmatch(name):
        raise schema.ConfigError(
            "profile.name",
            f"got {name!r}, expected the plain name (letters, digits, - and _) of a profile "
            f"that ships with hil: {', '.join(shipped)}",
        )
    if name not in shipped:
        raise schema.ConfigError(
            "profile.name", f"no profile {name!r} ships with hil; shipped: {', '.join(shipped)}"
        )
    return tomllib.loads(resources.files("hil.profiles").joinpath(f"{name}.toml").read_text())


def load_profile(name: str = "reference", overrides: dict[str, Any] | None = None) -> DeviceProfile:
    """A shipped profile with a rig's overrides applied, validated."""
    data = schema.merge(builtin_profile_data(name), overrides or {})
    return schema.load(DeviceProfile, data)


def profile_from_data(data: dict[str, Any]) -> DeviceProfile:
    """A profile from already-resolved data (what the harness hands the twin)."""
    return schema.load(DeviceProfile, data)

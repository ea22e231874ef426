"""The device profile: the firmware contract of PROTOCOL.md as data, so labs edit data, not code."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from hil import schema
from hil.protocol.crypto import Cipher


def _regex(value: str, what: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{what} is not a valid regular expression: {exc}") from None
    return value


@dataclass(frozen=True)
class MqttContract:
    command_topic: str = "server_cmd"
    firmware_topic: str = "firmware/update"
    status_topic: str = "esp32_status"
    qos: int = 1
    protocol_level: int = 4
    client_id_prefix: str = "ESP32_SIM7600_"
    keepalive_s: int = 60


@dataclass(frozen=True)
class CryptoContract:
    key: str = ""
    iv: str = ""
    key_env: str = ""
    iv_env: str = ""
    echo_prefix: str = "ESP32_"
    max_plaintext: int = 256
    lcd_prefix: str = "MQTT Msg:"

    def cipher(self) -> Cipher:
        """The cipher, with key and IV from the named environment variables when given."""
        key = _secret(self.key_env, self.key, "crypto.key")
        iv = _secret(self.iv_env, self.iv, "crypto.iv")
        return Cipher(key.encode(), iv.encode())


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


@dataclass(frozen=True)
class StatusContract:
    online: str = r"^STATUS:ONLINE:(?P<version>\S+)$"
    heartbeat: str = r"^STATUS:HEARTBEAT:(?P<uptime>\d+)$"

    def __post_init__(self) -> None:
        for name in ("online", "heartbeat"):
            _regex(getattr(self, name), f"status.{name}")


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

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, str):
                _regex(value, f"console.{name}")


@dataclass(frozen=True)
class FirmwareContract:
    max_retries: int = 3
    retry_delay_s: float = 2.0
    heartbeat_s: float = 30.0
    states: list[str] = field(default_factory=list)
    recovery_path: list[str] = field(default_factory=list)

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


def builtin_profile_data(name: str) -> dict[str, Any]:
    """The raw data of a profile shipped in the package."""
    try:
        text = resources.files("hil.profiles").joinpath(f"{name}.toml").read_text()
    except FileNotFoundError:
        shipped = sorted(
            p.name.removesuffix(".toml")
            for p in resources.files("hil.profiles").iterdir()
            if p.name.endswith(".toml")
        )
        raise schema.ConfigError(
            "profile.name", f"no profile {name!r} ships with hil; shipped: {', '.join(shipped)}"
        ) from None
    return tomllib.loads(text)


def load_profile(name: str = "reference", overrides: dict[str, Any] | None = None) -> DeviceProfile:
    """A shipped profile with a rig's overrides applied, validated."""
    data = schema.merge(builtin_profile_data(name), overrides or {})
    return schema.load(DeviceProfile, data)


def profile_from_data(data: dict[str, Any]) -> DeviceProfile:
    """A profile from already-resolved data (what the harness hands the twin)."""
    return schema.load(DeviceProfile, data)

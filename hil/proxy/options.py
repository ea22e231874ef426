"""The rig's `[broker] proxy = true` and `proxy_listen = "host:port"`, for every broker driver.

With the proxy the device reaches the broker through it: a virtual rig's twin is given the
proxy's address, which is a free loopback port by default. A hardware device is configured
with a fixed address, so its rig names it in `proxy_listen` (an address of the runner the
device can reach).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hil import schema
from hil.schema import ConfigError

KEYS = ("proxy", "proxy_listen")
LOOPBACK = ("127.0.0.1", 0)


@dataclass(frozen=True)
class ProxyOptions:
    listen: tuple[str, int] = LOOPBACK

    @property
    def text(self) -> str:
        host, port = self.listen
        return f"{host}:{port or '<free port>'}"


def load_proxy_options(table: dict[str, Any]) -> ProxyOptions | None:
    """The proxy keys of a `[broker]` table; None when the rig has no proxy."""
    enabled = table.get("proxy", False)
    listen = table.get("proxy_listen")
    if not isinstance(enabled, bool):
        raise ConfigError("broker.proxy", f"got {enabled!r}, expected true or false")
    if listen is not None and not enabled:
        raise ConfigError(
            "broker.proxy_listen", "applies only with proxy = true; add it or remove proxy_listen"
        )
    if not enabled:
        return None
    if listen is None:
        return ProxyOptions()
    return ProxyOptions(_address(listen))


def _address(value: Any) -> tuple[str, int]:
    key = "broker.proxy_listen"
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(key, f'got {value!r}, expected "host:port" (e.g. "0.0.0.0:18830")')
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:1883
    if not host or not port.isdigit():
        raise ConfigError(key, f'got {value!r}, expected "host:port" with a port number')
    try:
        schema.port(int(port), "port")
    except ConfigError as exc:
        raise ConfigError(key, f"{exc.reason} (in {value!r})") from None
    return host, int(port)

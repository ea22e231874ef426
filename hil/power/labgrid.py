"""A labgrid place's power port (NetworkPowerPort: an outlet of a networked PDU), switched
through labgrid's own NetworkPowerDriver and its backend for the port's model
(`labgrid/driver/power/MODEL.py`), so every PDU labgrid knows works here as it does in labgrid.

The rig names the port as it names the place's serial ports, `port = "{labgrid:NAME}"`; once
the place is acquired that stands for the port's description (its model, host and index, and
the exporter's proxy rules), which this driver turns back into a labgrid resource. An outlet
switches the supply itself, so `normally_closed` means nothing here.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from hil import schema
from hil.lab import PLACEHOLDER, LabgridMissing, require_labgrid
from hil.lab.place import POWER_CLASS, POWER_PREFIX
from hil.power import PowerDriver, PowerError

CREDENTIALS = re.compile(r"(//)[^/@\s]*@")


@dataclass(frozen=True)
class LabgridPowerOptions:
    port: str  # "{labgrid:NAME}": the place's NetworkPowerPort NAME
    timeout_s: float = 10.0  # the longest one switch may take (labgrid's backends set none)

    def __post_init__(self) -> None:
        with schema.Checks() as check:
            check(schema.positive, self.timeout_s, "timeout_s")
            if not (PLACEHOLDER.fullmatch(self.port) or self.port.startswith(POWER_PREFIX)):
                raise schema.ConfigError(
                    "port",
                    f"expected {{labgrid:NAME}}, the name of the place's {POWER_CLASS}, "
                    f"got {self.port!r}",
                )


def _redacted(text: str) -> str:
    """A PDU URL's `user:password@` left out: logs and reports never show it."""
    return CREDENTIALS.sub(r"\1", text)


class LabgridPower(PowerDriver):
    """One outlet of a place's PDU, by labgrid's NetworkPowerDriver."""

    Options = LabgridPowerOptions
    labgrid_class: ClassVar[str] = POWER_CLASS  # what the place's resource must be

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._target: Any = None
        self._driver: Any = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.resource, self.place, self.params = self._described()

    def _described(self) -> tuple[str, str, dict[str, Any]]:
        port = self.options.port
        if not port.startswith(POWER_PREFIX):
            return port, "", {}
        described = json.loads(port.removeprefix(POWER_PREFIX))
        return described["name"], described["place"], described["params"]

    def open(self) -> None:
        if not self.place:
            raise PowerError(
                f"[{self.section}] port {self.options.port} is a labgrid place's power port, "
                "known only while the place is acquired; give the rig a [labgrid] table and "
                "switch it through `hil run`, `hil power` or `hil reset`"
            )
        try:
            require_labgrid()
        except LabgridMissing as exc:
            raise PowerError(str(exc)) from None
        from labgrid import Target
        from labgrid.driver import NetworkPowerDriver
        from labgrid.resource import NetworkPowerPort

        args = {k: v for k, v in self.params.items() if k != "extra"}
        self._target = Target(f"hil-{self.section}")
        try:
            port = NetworkPowerPort(self._target, self.resource, **args)
            port.extra = self.params.get("extra", {})
            self._driver = NetworkPowerDriver(self._target, self.resource)
            self._target.activate(self._driver)  # the exporter's proxy rules, as labgrid's
        except ModuleNotFoundError:
            self.close()
            raise PowerError(
                f"power port {self.resource} of place {self.place} has model "
                f"{self.params.get('model')!r}, which this labgrid has no backend for "
                "(labgrid/driver/power/); fix its model on the exporter or update labgrid"
            ) from None
        except Exception as exc:  # labgrid's attrs validators and proxy errors
            self.close()
            raise PowerError(
                f"power port {self.resource} of place {self.place} cannot be used: "
                f"{_redacted(str(exc))}; check its model, host and index on the exporter"
            ) from None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, f"hil-{self.section}")

    def close(self) -> None:
        if self._target is not None:
            self._target.deactivate_all_drivers()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._target, self._driver, self._pool = None, None, None

    def set(self, on: bool) -> None:
        self._switch(on)
        self.is_on = on

    def _energize(self, energized: bool) -> None:
        self.set(energized)

    def _switch(self, on: bool) -> None:
        """labgrid's backend in a thread of its own: a PDU that does not answer is an error
        after `timeout_s`, not a run that hangs."""
        if self._driver is None or self._pool is None:
            raise PowerError("labgrid power port used before open()")
        future = self._pool.submit(self._driver.on if on else self._driver.off)
        try:
            future.result(self.options.timeout_s)
        except concurrent.futures.TimeoutError:
            raise PowerError(
                f"{self.describe()} did not switch {'on' if on else 'off'} within "
                f"{self.options.timeout_s:g} s ([{self.section}] timeout_s); check the PDU"
            ) from None
        except Exception as exc:  # whatever the model's backend raises: requests, SNMP, ...
            raise PowerError(
                f"{self.describe()} failed to switch {'on' if on else 'off'}: {_redacted(str(exc))}"
            ) from None

    def describe(self) -> str:
        if not self.place:
            return f"labgrid power port {self.options.port}"
        model, host = self.params.get("model"), _redacted(str(self.params.get("host")))
        index = self.params.get("index")
        return (
            f"labgrid power port {self.resource} of place {self.place} "
            f"({model} {host} index {index})"
        )

"""A place of the lab for the length of a run: reserved, waited for, acquired, given back.

A run never grabs a place: it reserves it by name (labgrid's filter `name=PLACE`) and waits its
turn in the coordinator's queue, saying where it stands whenever that changes; it acquires the
place once the reservation is allocated to it, then cancels the reservation, so a run killed
later leaves only the acquisition behind, which `PlaceHolder` makes reclaimable. A reservation
is polled every second: the coordinator drops one not polled for 60 s, which is what frees the
queue of a run killed while it waited.

The exporter serves each of the place's serial ports through ser2net only while the place is
acquired, on a TCP port of its choosing, and on a new port after the device was away (a native
USB console on every reset). `url(name)` therefore looks the resource up again on every call:
the remote counterpart of re-matching udev locally. A place's power ports (NetworkPowerPort: an
outlet of a networked PDU) are not served; `url(name)` gives their description, which the
`labgrid` power driver switches through labgrid's own power backends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from hil.lab import LabError, LabgridOptions, resource_names
from hil.lab.client import LabClient, PlaceResource
from hil.lab.holder import PlaceHolder

POLL_S = 1.0  # a reservation's poll: well inside labgrid's 60 s reservation timeout
SETTLE_S = 20.0  # for the coordinator's resource sync (every 15 s) to free a dead client's
READY_S = 10.0  # for the exporter to start ser2net for each port once the place is acquired
READY_POLL_S = 0.1
SERIAL_CLASS = "NetworkSerialPort"
POWER_CLASS = "NetworkPowerPort"
CLASSES = (SERIAL_CLASS, POWER_CLASS)
POWER_PREFIX = "labgrid-power:"


def serial_url(resource: PlaceResource) -> str:
    """The pyserial URL of a NetworkSerialPort, through labgrid's proxy rules (LG_PROXY, an
    isolated exporter's SSH forward): RFC 2217 as labgrid's SerialDriver opens it (control
    line changes not waited for: ser2net cannot apply them to every port), or raw TCP."""
    from labgrid.resource import NetworkSerialPort
    from labgrid.util.proxy import proxymanager

    args = {k: v for k, v in resource.params.items() if k != "extra"}
    port = NetworkSerialPort(target=None, name=resource.name, **args)
    port.extra = resource.params.get("extra", {})
    host, tcp = proxymanager.get_host_and_port(port)
    host = f"[{host}]" if ":" in host else host
    if port.protocol == "raw":
        return f"socket://{host}:{tcp}"
    return f"rfc2217://{host}:{tcp}?ign_set_control"


def power_port(resource: PlaceResource, place: str) -> str:
    """A NetworkPowerPort as the `labgrid` power driver's port: its name, place and params."""
    described = {"name": resource.name, "place": place, "params": resource.params}
    return POWER_PREFIX + json.dumps(described, sort_keys=True)


def wanted_classes(rig: Any, sections: Iterable[str] | None = None) -> dict[str, str]:
    """The class each `{labgrid:NAME}` of the rig (or of its tables `sections`) must be: the
    one its driver opens (`labgrid_class` on the driver, a serial port unless it says
    otherwise)."""
    wanted: dict[str, str] = {}
    for field in dataclasses.fields(rig):
        if sections is not None and field.name not in sections:
            continue
        config = getattr(rig, field.name)
        options = getattr(config, "options", None)
        if not dataclasses.is_dataclass(options):
            continue
        cls = getattr(config.cls, "labgrid_class", SERIAL_CLASS)
        for option in dataclasses.fields(options):
            value = getattr(options, option.name)
            for name in resource_names(value) if isinstance(value, str) else []:
                if wanted.setdefault(name, cls) != cls:
                    raise LabError(
                        f"{{labgrid:{name}}} is opened as a {wanted[name]} and as a {cls} "
                        f"([{field.name}] {option.name}); give each driver a resource of its kind"
                    )
    return wanted


class PlaceHold:
    """The rig's place, with the resources named `names` (`{labgrid:NAME}` in the rig): a
    mapping gives the class each must be, a plain list takes a serial or a power port."""

    def __init__(
        self,
        options: LabgridOptions,
        names: Iterable[str] | Mapping[str, str],
        notice: Callable[[str], None],
        lock_dir: Any = None,
    ) -> None:
        self.options = options
        self.name = options.place
        self.classes: dict[str, str | None] = (
            dict(names) if isinstance(names, Mapping) else dict.fromkeys(names)
        )
        self.names = sorted(self.classes)
        self.notice = notice
        self.client = LabClient(options.coordinator)
        self.holder = PlaceHolder(options.coordinator, options.place, lock_dir)
        self._place: Any = None  # labgrid's Place, as acquired (its matches cannot change)
        self._maybe_acquired = False

    def describe(self) -> str:
        return f"labgrid place {self.name} on {self.options.coordinator}"

    def acquire(self) -> dict[str, str]:
        """Wait for the place and acquire it; the pyserial URL of each of `names`."""
        self.client.start()
        place = self.client.place(self.name)
        self._check(place)
        self._reclaim(place)
        token = self.client.reserve(self.name).token
        try:
            self._wait_turn(token)
            self.holder.take()
            self._maybe_acquired = True  # from here on the release tries, whatever happens
            try:
                self._acquire(token)
            except LabError:
                self._maybe_acquired = False
                self.holder.give_back()
                raise
        finally:
            with contextlib.suppress(LabError):
                self.client.cancel(token)
        self._place = self.client.place(self.name)
        urls = self._ready()
        self.notice(f"hil: acquired {self.describe()}")
        return urls

    def _check(self, place: Any) -> None:
        """Every resource the rig names is one serial or power port of the place, of the class
        its driver opens."""
        found: dict[str, list[PlaceResource]] = {}
        for resource in self.client.resources(place):
            found.setdefault(resource.name, []).append(resource)
        have = ", ".join(f"{n} ({r[0].cls})" for n, r in sorted(found.items())) or "none"
        for name in self.names:
            matches = found.get(name, [])
            wanted = self.classes[name]
            if not matches:
                kind = wanted or SERIAL_CLASS
                raise LabError(
                    f"place {self.name} has no resource named {name!r} (its resources: {have}); "
                    f"fix {{labgrid:{name}}} in the rig, or name one with `labgrid-client -p "
                    f"{self.name} add-named-match EXPORTER/GROUP/{kind}/RESOURCE {name}`"
                )
            if len(matches) > 1:
                paths = ", ".join("/".join(r.path) for r in matches)
                raise LabError(
                    f"place {self.name} has {len(matches)} resources named {name!r} ({paths}); "
                    "make its matches name one"
                )
            if matches[0].cls not in ((wanted,) if wanted else CLASSES):
                raise LabError(
                    f"resource {name!r} of place {self.name} is a {matches[0].cls}; "
                    + _class_fix(name, wanted)
                )

    def _reclaim(self, place: Any) -> None:
        """Release the place if a run on this host held it and died."""
        if place.acquired != self.client.name:
            return
        dead = self.holder.dead_holder()
        if dead is None:
            return
        self.client.release(self.name, holder=self.client.name)
        if place.reservation:  # killed between acquiring and cancelling its reservation
            for reservation in self.client.reservations():
                if reservation.token == place.reservation and reservation.owner == self.client.name:
                    with contextlib.suppress(LabError):
                        self.client.cancel(reservation.token)
        self.notice(
            f"hil: place {self.name} was left acquired by a run that is gone (pid "
            f"{dead.get('pid')}, since {dead.get('since')}: {dead.get('command')}); released it"
        )

    def _wait_turn(self, token: str) -> None:
        """Poll the reservation until the place is allocated to it, reporting the queue."""
        deadline = time.monotonic() + self.options.wait_s
        said = None
        while True:
            reservation = self.client.poll(token)
            state = reservation.state.name
            if state in ("allocated", "acquired"):
                if reservation.allocations.get("main") == [self.name]:
                    return
            elif state != "waiting":  # expired (this run stood still for a minute) or invalid
                raise LabError(
                    f"the reservation of place {self.name} became {state} while waiting; "
                    "start the run again"
                )
            status = self._queue(token)
            if status != said:
                self.notice(f"hil: waiting for place {self.name}: {status}")
                said = status
            if time.monotonic() >= deadline:
                raise LabError(
                    f"place {self.name} did not become free within {self.options.wait_s:g} s "
                    f"([labgrid] wait_s): {status}"
                )
            time.sleep(POLL_S)

    def _acquire(self, token: str) -> None:
        """Acquire the place allocated to this run's reservation.

        A client killed in the middle of acquiring leaves the coordinator holding some of the
        place's resources for it; the coordinator frees them at its next resource sync (every
        15 s), so a refusal is tried again for a while, the reservation kept alive meanwhile.
        """
        deadline = time.monotonic() + SETTLE_S
        said = False
        while True:
            try:
                self.client.acquire(self.name)
                return
            except LabError as exc:
                if time.monotonic() >= deadline:
                    raise
                if not said:
                    self.notice(f"hil: {exc}; trying again for up to {SETTLE_S:g} s")
                    said = True
            time.sleep(POLL_S)
            self.client.poll(token)

    def _queue(self, token: str) -> str:
        """Who holds the place and where this run stands in its queue."""
        place = self.client.place(self.name)
        tags = {*place.tags.items(), ("name", self.name)}
        queue = [
            r
            for r in self.client.reservations()
            if r.state.name == "waiting" and set(r.filters.get("main", {}).items()) <= tags
        ]
        position = next((i for i, r in enumerate(queue, 1) if r.token == token), len(queue))
        since = datetime.fromtimestamp(place.changed).isoformat(sep=" ", timespec="seconds")
        if place.acquired:
            holder = f"held by {place.acquired} since {since}"
            if place.acquired != self.client.name:
                holder += f" (if that run is gone: `labgrid-client -p {self.name} release --kick`)"
        elif place.reservation:
            holder = "allocated to the reservation before this one"
        else:
            holder = "being allocated"
        return f"{holder}; this run is {position} of {len(queue)} in its queue"

    def _ready(self) -> dict[str, str]:
        """The URL of each named port once the exporter serves it."""
        deadline = time.monotonic() + READY_S
        while True:
            urls = {name: self.url(name) for name in self.names}
            if all(urls.values()):
                return {name: url for name, url in urls.items() if url}
            if time.monotonic() >= deadline:
                away = ", ".join(name for name, url in urls.items() if not url)
                raise LabError(
                    f"place {self.name} is acquired, but its exporter serves no port for "
                    f"{away} after {READY_S:g} s; check that the device is plugged in and "
                    "ser2net is installed on the exporter's host"
                )
            time.sleep(READY_POLL_S)

    def url(self, name: str) -> str | None:
        """Where resource `name` is served now (a power port: what it is); None while the
        exporter serves it nowhere."""
        if self._place is None:
            return None
        try:
            resources = self.client.resources(self._place)
        except LabError:
            return None
        for resource in resources:
            if resource.name != name or resource.acquired != self.name or not resource.avail:
                continue
            if resource.cls == POWER_CLASS:
                return power_port(resource, self.name)
            if resource.params.get("port"):
                return serial_url(resource)
        return None

    def release(self) -> None:
        """Give the place back (if this run has it) and end the session; never raises."""
        try:
            if self._maybe_acquired:
                with contextlib.suppress(LabError):
                    self.client.release(self.name, holder=self.client.name)
                    self.notice(f"hil: released {self.describe()}")
        finally:
            self.holder.give_back()
            self._maybe_acquired = False
            self._place = None
            self.client.close()


def _class_fix(name: str, wanted: str | None) -> str:
    if wanted == POWER_CLASS:
        return (
            f"the labgrid power driver switches a {POWER_CLASS} (a PDU outlet); for a relay "
            f'exported as a serial port write driver = "lcus" with port = "{{labgrid:{name}}}"'
        )
    if wanted == SERIAL_CLASS:
        return (
            f"this driver opens a {SERIAL_CLASS} (a USBSerialPort or RawSerialPort on the "
            f'exporter); for a {POWER_CLASS} write [power] driver = "labgrid"'
        )
    return (
        f"hil opens a place's console and LCUS relays as {SERIAL_CLASS}s (a USBSerialPort or "
        f"RawSerialPort on the exporter) and switches its {POWER_CLASS}s"
    )

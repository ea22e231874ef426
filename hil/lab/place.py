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
the remote counterpart of re-matching udev locally.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from hil.lab import LabError, LabgridOptions
from hil.lab.client import LabClient, PlaceResource
from hil.lab.holder import PlaceHolder

POLL_S = 1.0  # a reservation's poll: well inside labgrid's 60 s reservation timeout
SETTLE_S = 20.0  # for the coordinator's resource sync (every 15 s) to free a dead client's
READY_S = 10.0  # for the exporter to start ser2net for each port once the place is acquired
READY_POLL_S = 0.1
SERIAL_CLASS = "NetworkSerialPort"


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


class PlaceHold:
    """The rig's place, with the serial ports named `names` (`{labgrid:NAME}` in the rig)."""

    def __init__(
        self,
        options: LabgridOptions,
        names: Iterable[str],
        notice: Callable[[str], None],
        lock_dir: Any = None,
    ) -> None:
        self.options = options
        self.name = options.place
        self.names = sorted(set(names))
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
        """Every resource the rig names is one serial port of the place."""
        found: dict[str, list[PlaceResource]] = {}
        for resource in self.client.resources(place):
            found.setdefault(resource.name, []).append(resource)
        have = ", ".join(f"{n} ({r[0].cls})" for n, r in sorted(found.items())) or "none"
        for name in self.names:
            matches = found.get(name, [])
            if not matches:
                raise LabError(
                    f"place {self.name} has no resource named {name!r} (its resources: {have}); "
                    f"fix {{labgrid:{name}}} in the rig, or name one with `labgrid-client -p "
                    f"{self.name} add-named-match EXPORTER/GROUP/{SERIAL_CLASS}/RESOURCE {name}`"
                )
            if len(matches) > 1:
                paths = ", ".join("/".join(r.path) for r in matches)
                raise LabError(
                    f"place {self.name} has {len(matches)} resources named {name!r} ({paths}); "
                    "make its matches name one"
                )
            if matches[0].cls != SERIAL_CLASS:
                raise LabError(
                    f"resource {name!r} of place {self.name} is a {matches[0].cls}; hil opens "
                    f"a place's console and relays as serial ports ({SERIAL_CLASS}: a "
                    "USBSerialPort or RawSerialPort on the exporter)"
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
        """Where resource `name` is served now; None while the exporter serves it nowhere."""
        if self._place is None:
            return None
        try:
            resources = self.client.resources(self._place)
        except LabError:
            return None
        for resource in resources:
            served = resource.avail and resource.params.get("port")
            if resource.name == name and resource.acquired == self.name and served:
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

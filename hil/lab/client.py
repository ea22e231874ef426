"""A session with the lab's labgrid coordinator, through labgrid's own client library.

labgrid's `ClientSession` is asyncio code whose message pump keeps its view of places and
resources current from the coordinator's stream. The harness is synchronous and its tests run
event loops of their own, so the session gets a loop in a thread of its own for as long as the
client lives; every call here runs there and returns a snapshot. Requests go through the
session's gRPC stub as labgrid-client's own commands send them, each followed by a sync so the
session has seen its effect when the call returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from hil.lab import LabError, require_labgrid

T = TypeVar("T")
DEFAULT_PORT = 20408  # labgrid's own default for a coordinator address without a port
CONNECT_S = 10.0
CALL_S = 15.0


@dataclass(frozen=True)
class PlaceResource:
    """One resource a place matches: its name in the place, where it is exported, its state."""

    name: str  # the match's rename, else the exporter's resource name (labgrid's rule)
    path: tuple[str, str, str, str]  # exporter, group, class, resource name
    params: dict[str, Any]
    avail: bool
    acquired: str | None  # the place that holds it

    @property
    def cls(self) -> str:
        return self.path[2]


def _labgrid_unreachable(record: logging.LogRecord) -> bool:
    """False for labgrid's own `coordinator is unavailable` line, logged on the root logger
    while its session connects: LabClient.start says it once, with the fix."""
    return not (record.msg == "coordinator is unavailable: %s" and "labgrid" in record.pathname)


@contextlib.contextmanager
def _quiet_unreachable() -> Any:
    root = logging.getLogger()
    root.addFilter(_labgrid_unreachable)
    try:
        yield
    finally:
        root.removeFilter(_labgrid_unreachable)


class LabClient:
    """The coordinator at `address` (host:port), as `host/user`; close() when done."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: Any = None

    def start(self, timeout: float = CONNECT_S) -> LabClient:
        require_labgrid()
        from labgrid.remote.client import ClientSession, ServerError
        from labgrid.util.proxy import proxymanager

        address = proxymanager.get_grpc_address(self.address, default_port=DEFAULT_PORT)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="hil-labgrid", daemon=True
        )
        self._thread.start()

        async def connect() -> Any:
            session = ClientSession(address, asyncio.get_running_loop())
            try:
                await session.start()
            except BaseException:
                await session.close()
                raise
            return session

        unreachable = (
            f"cannot reach the labgrid coordinator at {address}; check that it runs and "
            "[labgrid] coordinator (or LG_COORDINATOR)"
        )
        try:
            with _quiet_unreachable():
                self._session = self._run(connect, timeout, "a new session")
        except (ServerError, LabError):
            self.close()
            raise LabError(unreachable) from None
        except BaseException:
            self.close()
            raise
        return self

    @property
    def name(self) -> str:
        """Who the coordinator sees: `host/user`, the form of a place's `acquired`."""
        return f"{self._session.gethostname()}/{self._session.getuser()}"

    def close(self) -> None:
        if self._loop is None:
            return
        session, self._session = self._session, None
        if session is not None:

            async def stop() -> None:
                await session.stop()
                await session.close()
                # gRPC's own tasks of the closed channel end here, not destroyed pending
                rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in rest:
                    task.cancel()
                await asyncio.gather(*rest, return_exceptions=True)

            with contextlib.suppress(Exception):  # a coordinator gone away: nothing to close
                self._run(stop, CALL_S, "closing the session")
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()
        self._loop, self._thread = None, None

    def _run(self, make: Callable[[], Awaitable[T]], timeout: float, what: str) -> T:
        """`await make()` on the session's loop; a gRPC error is a LabError with its details."""
        if self._loop is None:
            raise LabError(f"no session with the coordinator at {self.address}")

        async def call() -> T:
            import grpc

            try:
                return await make()
            except grpc.aio.AioRpcError as exc:
                raise LabError(
                    f"coordinator {self.address} refused {what}: {exc.details()}"
                ) from None

        future = asyncio.run_coroutine_threadsafe(call(), self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise LabError(
                f"coordinator {self.address} did not answer {what} within {timeout:g} s"
            ) from None
        except BaseException:
            future.cancel()  # Ctrl-C or SIGTERM while waiting: the call does not go on alone
            raise

    def _request(self, what: str, method: str, request: Any) -> Any:
        """One request through the stub, then a sync: the session has seen what it changed."""

        async def send() -> Any:
            response = await getattr(self._session.stub, method)(request)
            if not await self._session.sync_with_coordinator():
                raise LabError(f"lost the coordinator at {self.address} during {what}")
            return response

        return self._run(send, CALL_S, what)

    def _connected(self) -> None:
        if self._session is None or self._session.stopping.is_set():
            raise LabError(
                f"lost the labgrid coordinator at {self.address}; check that it still runs"
            )

    # -- what the coordinator knows ------------------------------------------------------
    def places(self) -> dict[str, Any]:
        """Every place (labgrid's `Place` objects, copied), by name."""
        self._connected()

        async def snapshot() -> dict[str, Any]:
            return copy.deepcopy(self._session.places)

        return self._run(snapshot, CALL_S, "a list of places")

    def place(self, name: str) -> Any:
        places = self.places()
        if name not in places:
            known = ", ".join(sorted(places)) or "none"
            raise LabError(
                f"place {name!r} does not exist on the coordinator at {self.address} (places "
                f"there: {known}); fix [labgrid] place, or create it with `labgrid-client -p "
                f"{name} create` and add its matches"
            )
        return places[name]

    def resources(self, place: Any) -> list[PlaceResource]:
        """The exported resources `place` matches, named as the place names them."""
        self._connected()

        async def snapshot() -> list[PlaceResource]:
            found = []
            for exporter, groups in sorted(self._session.resources.items()):
                for group_name, group in sorted(groups.items()):
                    for resource_name, entry in sorted(group.items()):
                        if "cls" not in entry.data:  # deleted: the exporter went away
                            continue
                        path = (exporter, group_name, entry.cls, resource_name)
                        match = place.getmatch(path)
                        if match is None:
                            continue
                        found.append(
                            PlaceResource(
                                match.rename or resource_name,
                                path,
                                dict(entry.params),
                                bool(entry.avail),
                                entry.acquired,
                            )
                        )
            return found

        return self._run(snapshot, CALL_S, "the place's resources")

    def reservations(self) -> list[Any]:
        """Every reservation (labgrid's `Reservation`), oldest of the highest priority first."""
        from labgrid.remote.common import Reservation
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        response = self._request("the reservations", "GetReservations", pb.GetReservationsRequest())
        found = [Reservation.from_pb2(r) for r in response.reservations]
        return sorted(found, key=lambda r: (-r.prio, r.created))

    # -- changing it ---------------------------------------------------------------------
    def reserve(self, place: str) -> Any:
        """A reservation for the place by name (labgrid's filter `name=PLACE`)."""
        from labgrid.remote.common import Reservation
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        request = pb.CreateReservationRequest(
            filters={"main": pb.Reservation.Filter(filter={"name": place})}, prio=0.0
        )
        response = self._request(f"a reservation of {place}", "CreateReservation", request)
        return Reservation.from_pb2(response.reservation)

    def poll(self, token: str) -> Any:
        """The reservation now; polling also keeps it alive (it expires 60 s after the last)."""
        from labgrid.remote.common import Reservation
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        request = pb.PollReservationRequest(token=token)
        response = self._request(f"reservation {token}", "PollReservation", request)
        return Reservation.from_pb2(response.reservation)

    def cancel(self, token: str) -> None:
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        request = pb.CancelReservationRequest(token=token)
        self._request(f"cancelling reservation {token}", "CancelReservation", request)

    def acquire(self, place: str) -> None:
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        request = pb.AcquirePlaceRequest(placename=place)
        self._request(f"acquiring place {place}", "AcquirePlace", request)

    def release(self, place: str, holder: str) -> None:
        """Release `place` if `holder` (host/user) still has it, and only then."""
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        request = pb.ReleasePlaceRequest(placename=place, fromuser=holder)
        self._request(f"releasing place {place}", "ReleasePlace", request)

    def __enter__(self) -> LabClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

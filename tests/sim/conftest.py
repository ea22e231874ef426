"""A real mosquitto for the session and a factory of twins started as processes against it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hil.broker import BrokerEndpoint
from hil.broker.mosquitto import MosquittoBroker, MosquittoOptions
from hil.profile import load_profile
from hil.sim.options import SimOptions
from hil.sim.process import TwinProcess
from tests.sim.rig import ConsoleLog, StatusWatch, VirtualRig

TIME_SCALE = 0.02
FAST_FIRMWARE = {"retry_delay_s": 0.2, "heartbeat_s": 2.0}
CHUNK_TIMEOUT_S = 2.0
_counter = itertools.count()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(MosquittoOptions(), tmp_path_factory.mktemp("mosquitto"))
    broker.endpoint = broker.start()  # type: ignore[attr-defined]
    yield broker
    broker.stop()


@pytest.fixture
def start_twin(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[Callable[..., VirtualRig]]:
    """`start_twin(faults=[...], version=...)`: a twin on its own topics, online, watched."""
    cleanups: list[Callable[[], None]] = []
    endpoint: BrokerEndpoint = mosquitto.endpoint  # type: ignore[attr-defined]

    def start(
        faults: list[str] | None = None,
        version: str = "1.0.0",
        rtt_ms: float = 0.0,
        console: str = "native-usb",
    ) -> VirtualRig:
        n = next(_counter)
        profile = load_profile(
            overrides={
                "firmware": FAST_FIRMWARE,
                "ota": {"chunk_timeout_s": CHUNK_TIMEOUT_S},
                "mqtt": {
                    "command_topic": f"t{n}/server_cmd",
                    "firmware_topic": f"t{n}/firmware/update",
                    "status_topic": f"t{n}/esp32_status",
                },
            }
        )
        status = StatusWatch(endpoint.host, endpoint.port, profile.mqtt.status_topic)
        cleanups.append(status.close)
        twin = TwinProcess()
        cleanups.append(twin.stop)
        options = SimOptions(
            firmware_version=version,
            time_scale=TIME_SCALE,
            rtt_ms=rtt_ms,
            faults=faults or [],
            console=console,
        )
        ports = twin.start(
            tmp_path / f"twin{n}", f"{endpoint.host}:{endpoint.port}", profile, options
        )
        console = ConsoleLog(ports.console)
        cleanups.append(console.close)
        rig = VirtualRig(ports, profile, endpoint.host, endpoint.port, console, status)
        rig.wait_online(version)
        return rig

    yield start
    for cleanup in reversed(cleanups):
        cleanup()

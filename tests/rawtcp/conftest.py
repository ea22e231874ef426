"""A real mosquitto for the raw-TCP tests: the broker that must accept the firmware's frames."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hil.broker import BrokerEndpoint
from hil.broker.mosquitto import MosquittoBroker, MosquittoOptions


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerEndpoint]:
    broker = MosquittoBroker(MosquittoOptions(), tmp_path_factory.mktemp("mosquitto"))
    endpoint = broker.start()
    yield endpoint
    broker.stop()

"""amqtt in a thread of this process: a broker for a machine that has nothing but pip."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from hil import schema
from hil.broker import BrokerDriver, BrokerEndpoint, BrokerError, free_port


@dataclass(frozen=True)
class EmbeddedOptions:
    host: str = "127.0.0.1"
    port: int = 0
    start_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        with schema.Checks() as check:
            check(schema.nonempty, self.host, "host", "host name or address to listen on")
            check(schema.port, self.port, "port", free=True)
            check(schema.positive, self.start_timeout_s, "start_timeout_s")


class EmbeddedBroker(BrokerDriver):
    """Runs on its own event loop thread, so a busy test loop never stalls the broker."""

    Options = EmbeddedOptions

    def __init__(self, options: EmbeddedOptions, workdir: Path) -> None:
        super().__init__(options, workdir)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker = None
        self.log_path = workdir / "amqtt.log"
        self._log_handler: logging.Handler | None = None

    def start(self) -> BrokerEndpoint:
        try:
            from amqtt.broker import Broker
        except ImportError:
            raise BrokerError("amqtt is not installed: pip install amqtt") from None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log_handler = logging.FileHandler(self.log_path)
        self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        logging.getLogger("amqtt").addHandler(self._log_handler)
        logging.getLogger("amqtt").propagate = False
        port = self.options.port or free_port(self.options.host)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.options.host}:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        self._loop = asyncio.new_event_loop()
        ready: Future[None] = Future()

        class TakeoverBroker(Broker):  # type: ignore[misc,valid-type]
            """amqtt 0.12 drops a clean-session client's session when another CONNECTs with
            its id, but leaves the first connection open and deaf (its takeover code only
            runs for persistent sessions). MQTT 3.1.1 section 3.1.4 says the server closes
            it, as mosquitto does; a device whose id is taken must see its link drop."""

            async def _delete_session(self, client_id: str) -> None:
                session, handler = self._sessions.get(client_id, (None, None))
                if session is not None and session.transitions.is_connected():
                    await handler.handle_connection_closed()
                    await handler.stop()
                await super()._delete_session(client_id)

        async def serve() -> None:
            self._broker = TakeoverBroker(config)
            await self._broker.start()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(serve())
            except Exception as exc:  # reported to start() below
                ready.set_exception(exc)
                return
            ready.set_result(None)
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="hil-amqtt", daemon=True)
        self._thread.start()
        try:
            ready.result(timeout=self.options.start_timeout_s)
        except Exception as exc:
            self.stop()
            raise BrokerError(
                f"embedded amqtt broker did not start on port {port}: {exc}"
            ) from None
        return BrokerEndpoint(self.options.host, port)

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if self._broker is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self._broker.shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread:
            self._thread.join(timeout=10)
        loop.close()
        self._broker = None
        if self._log_handler:
            logging.getLogger("amqtt").removeHandler(self._log_handler)
            self._log_handler.close()

"""The twin as a child process, for the harness: start it, learn its ports, stop it.

The twin prints one JSON line when ready; everything else it says goes to stderr, which is kept
in a file so a failed start can show its tail.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from hil import schema
from hil.broker import TlsFiles
from hil.lifetime import die_with_parent
from hil.profile import DeviceProfile
from hil.sim.firmware_rawtcp import refusal
from hil.sim.options import SimOptions

STOP_TIMEOUT_S = 10.0
STDERR_TAIL_LINES = 30


@dataclass(frozen=True)
class TwinPorts:
    """What the running twin told us: its port symlinks, broker, firmware version and pid."""

    console: Path
    relay: Path
    broker: str
    version: str
    pid: int


class TwinProcess:
    """One `python -m hil.sim` child. Use as a context manager or call stop() yourself."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr_file: tempfile._TemporaryFileWrapper[bytes] | None = None
        self.ports: TwinPorts | None = None

    def start(
        self,
        dir: Path,
        broker: str,
        profile: DeviceProfile,
        options: SimOptions,
        username: str | None = None,
        password_env: str | None = None,
        timeout: float = 30,
        tls: TlsFiles | None = None,
    ) -> TwinPorts:
        """Start the twin against `broker` (HOST:PORT); with `tls`, over TLS with its CA and,
        if it has them, its client certificate and key (paths only: the twin reads them)."""
        if self._process is not None:
            raise RuntimeError("twin already started; stop() it first")
        if tls is not None and tls.ca is None:
            raise ValueError("a twin over TLS needs the CA that signed the broker's certificate")
        if options.transport == "raw-tcp" and (why := refusal(profile, tls is not None)):
            raise ValueError(f"[sim] {why}")
        dir.mkdir(parents=True, exist_ok=True)
        profile_path = dir / "profile.json"
        profile_path.write_text(json.dumps(schema.dump(profile), indent=2))
        argv = [
            sys.executable,
            "-m",
            "hil.sim",
            "--dir",
            str(dir),
            "--broker",
            broker,
            "--profile",
            str(profile_path),
            "--version",
            options.firmware_version,
            "--time-scale",
            repr(options.time_scale),
            "--rtt-ms",
            repr(options.rtt_ms),
            "--loss",
            repr(options.loss),
            "--seed",
            str(options.seed),
            "--relay-channel",
            str(options.relay_channel),
            "--board-channel",
            str(options.board_channel),
            "--strap-channel",
            str(options.strap_channel),
            "--console",
            options.console,
            "--transport",
            options.transport,
        ]
        for fault in options.faults:
            argv += ["--fault", fault]
        if options.flash is not None:
            argv += ["--flash", str(options.flash)]
        if username is not None:
            argv += ["--username", username]
        if password_env is not None:
            argv += ["--password-env", password_env]
        if tls is not None:
            argv += ["--ca", str(tls.ca)]
            if tls.cert is not None and tls.key is not None:
                argv += ["--cert", str(tls.cert), "--key", str(tls.key)]
        self._stderr_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives until stop())
            prefix="hil-sim-", suffix=".log", dir=dir, delete=False
        )
        # Its own session, so a terminal's Ctrl-C reaches only the harness, which switches the
        # relay back on before stopping the twin; and it dies with the harness on SIGKILL.
        self._process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        try:
            self.ports = self._await_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self.ports

    @property
    def stderr_path(self) -> Path | None:
        """The twin's log (its stderr), kept after stop() as an artifact."""
        return Path(self._stderr_file.name) if self._stderr_file else None

    def _await_ready(self, timeout: float) -> TwinPorts:
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        deadline = time.monotonic() + timeout
        buffer = b""
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"device twin not ready within {timeout:.0f} s{self._tail()}")
            readable, _, _ = select.select([stdout], [], [], min(left, 0.2))
            if readable:
                chunk = os.read(stdout.fileno(), 4096)
                if not chunk:
                    code = self._process.wait()
                    raise RuntimeError(f"device twin exited with {code} before ready{self._tail()}")
                buffer += chunk
        line = buffer.split(b"\n", 1)[0]
        try:
            ready = json.loads(line)
            return TwinPorts(
                console=Path(ready["console"]),
                relay=Path(ready["relay"]),
                broker=ready["broker"],
                version=ready["version"],
                pid=int(ready["pid"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(
                f"device twin said {line!r} instead of its ready JSON ({exc}){self._tail()}"
            ) from None

    def _tail(self) -> str:
        path = self.stderr_path
        if path is None or not path.exists():
            return ""
        lines = path.read_text(errors="replace").splitlines()[-STDERR_TAIL_LINES:]
        return ("; its stderr ends:\n" + "\n".join(lines)) if lines else "; it wrote no stderr"

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL; safe to call twice."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if self._stderr_file is not None:
            self._stderr_file.close()

    def __enter__(self) -> TwinProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""Helpers for the core tests: reference values from openssl, pty pairs standing in for ports."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

KEY = b"0123456789ABCDEF0123456789ABCDEF"
IV = b"0123456789ABCDEF"


def openssl_encrypt(plaintext: bytes, key: bytes = KEY, iv: bytes = IV) -> str:
    """base64(AES-256-CBC(plaintext)) computed by openssl, never by hil."""
    out = subprocess.run(
        ["openssl", "enc", "-aes-256-cbc", "-K", key.hex(), "-iv", iv.hex(), "-base64", "-A"],
        input=plaintext,
        capture_output=True,
        check=True,
    )
    return out.stdout.decode().strip()


class PtyPort:
    """A pty pair: the test writes to `master`, the code under test opens `path`."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self.open()

    def open(self) -> None:
        self.master, slave = pty.openpty()
        tty.setraw(slave)
        tty.setraw(self.master)
        self.slave_path = os.ttyname(slave)
        os.close(slave)
        if self.link.is_symlink():
            self.link.unlink()
        self.link.symlink_to(self.slave_path)

    def write_line(self, text: str) -> None:
        os.write(self.master, text.encode() + b"\r\n")

    def read(self, n: int = 64) -> bytes:
        return os.read(self.master, n)

    def vanish(self) -> None:
        """Close the master and remove the link, like a USB device unplugged."""
        self.link.unlink()
        os.close(self.master)
        self.master = -1

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


@pytest.fixture
def pty_port(tmp_path: Path) -> Iterator[PtyPort]:
    port = PtyPort(tmp_path / "console")
    yield port
    port.close()


POLL_S = 0.01


async def until(predicate, timeout: float, what: str) -> None:
    """Wait for a condition that has no event of its own, with a deadline."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(POLL_S)


needs_mosquitto = pytest.mark.skipif(
    not shutil.which("mosquitto", path=os.environ.get("PATH", "") + ":/usr/sbin"),
    reason="mosquitto is not installed (apt-get install mosquitto mosquitto-clients)",
)

"""The encrypted echo: what the firmware publishes for a `server_cmd` payload (no I/O here)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from hil.profile import CryptoContract
from hil.protocol.crypto import Cipher, DecryptError

WRONG_IV = bytes(range(16))  # the IV a buggy build encrypts replies with (fault echo_wrong_iv)


@dataclass(frozen=True)
class EchoAnswer:
    plaintext: str
    replies: tuple[str, str]  # published on the status topic, in this order


def is_base64(payload: bytes) -> bool:
    try:
        base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


class Echo:
    """Decrypts a command and builds the two answers; faults make it answer wrongly."""

    def __init__(self, contract: CryptoContract, faults: set[str]) -> None:
        self._contract = contract
        self._cipher = contract.cipher()
        self._faults = faults

    def answer(self, payload: bytes) -> EchoAnswer:
        """The echo for `payload`; DecryptError when the device must refuse it."""
        plaintext = self._cipher.decrypt_text(payload)
        if len(plaintext.encode()) > self._contract.max_plaintext:
            raise DecryptError(f"plaintext longer than {self._contract.max_plaintext} bytes")
        second = self._contract.echo_prefix + plaintext
        if "echo_no_prefix" in self._faults:
            second = plaintext
        cipher = self._cipher
        if "echo_wrong_iv" in self._faults:
            cipher = Cipher(cipher.key, WRONG_IV)
        return EchoAnswer(plaintext, (plaintext, cipher.encrypt(second)))

    def lcd_text(self, plaintext: str) -> str:
        return f"{self._contract.lcd_prefix} {plaintext[:16]}"

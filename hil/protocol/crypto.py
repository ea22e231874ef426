"""AES-256-CBC with PKCS7 padding and standard base64, as the device speaks it on `server_cmd`."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher as _Cipher
from cryptography.hazmat.primitives.ciphers import algorithms, modes

BLOCK = 16


class DecryptError(ValueError):
    """A payload that the device must refuse: not base64, not whole blocks, or bad padding."""


@dataclass(frozen=True)
class Cipher:
    """The echo cipher: a 32-byte key and a 16-byte IV, fixed for the session."""

    key: bytes
    iv: bytes

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise ValueError(f"AES-256 key must be 32 bytes, got {len(self.key)}")
        if len(self.iv) != BLOCK:
            raise ValueError(f"AES-CBC IV must be 16 bytes, got {len(self.iv)}")

    def encrypt(self, plaintext: str | bytes) -> str:
        """Return base64(AES-256-CBC(PKCS7(plaintext)))."""
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        padder = padding.PKCS7(BLOCK * 8).padder()
        padded = padder.update(data) + padder.finalize()
        enc = _Cipher(algorithms.AES(self.key), modes.CBC(self.iv)).encryptor()
        return base64.b64encode(enc.update(padded) + enc.finalize()).decode("ascii")

    def decrypt(self, payload: str | bytes) -> bytes:
        """Invert `encrypt`; raise DecryptError for anything the device would refuse."""
        raw = payload.encode() if isinstance(payload, str) else payload
        try:
            blob = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DecryptError(f"not valid base64: {exc}") from None
        if not blob or len(blob) % BLOCK:
            raise DecryptError(f"ciphertext is {len(blob)} bytes, not a multiple of 16")
        dec = _Cipher(algorithms.AES(self.key), modes.CBC(self.iv)).decryptor()
        padded = dec.update(blob) + dec.finalize()
        unpadder = padding.PKCS7(BLOCK * 8).unpadder()
        try:
            return unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            raise DecryptError("bad PKCS7 padding") from None

    def decrypt_text(self, payload: str | bytes) -> str:
        """Decrypt and decode as UTF-8 (the device's plaintext is UTF-8)."""
        try:
            return self.decrypt(payload).decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptError("plaintext is not UTF-8") from None

"""Ed25519 signatures over an acceptance record, checkable without hil.

The signature covers the record's **canonical bytes**: the record's JSON object without its
`"signature"` member, written with the keys of every object sorted, no whitespace between
tokens (separators `,` and `:`), characters outside ASCII as themselves rather than `\\u`
escapes, numbers as Python's `json` module writes them, and the text encoded in UTF-8. In
Python::

    body = {k: v for k, v in record.items() if k != "signature"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False, allow_nan=False).encode("utf-8")

The layout of the file itself (indentation, line breaks) is not signed; every value is.
`record["signature"]` is `{"algorithm": "ed25519", "public_key": <the 32-byte raw public key,
base64>, "key_id": <the first 16 hex digits of that raw key's SHA-256>, "value": <the 64-byte
signature, base64>}`. The public key in the record only says who claims to have signed: a
check must use a key the verifier already trusts. With OpenSSL, after writing the canonical
bytes to canonical.bin and the decoded value to sig.bin::

    openssl pkeyutl -verify -pubin -inkey pub.pem -rawin -in canonical.bin -sigfile sig.bin
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "ed25519"
SIGNATURE = "signature"
MAKE_KEY = "openssl genpkey -algorithm ed25519 -out {path}"
ENCRYPTED_PEM = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
PRIVATE_PEM = b"PRIVATE KEY-----"


class KeyFileError(Exception):
    """A key file that cannot be used: the message names the file and the fix."""


class InvalidRecord(Exception):
    """A record whose signature does not hold against the trusted key."""


def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    """The bytes the signature covers (see the module docstring)."""
    body = {key: value for key, value in record.items() if key != SIGNATURE}
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 16 hex digits of its raw bytes' SHA-256."""
    return hashlib.sha256(raw_public_key(key)).hexdigest()[:16]


def sign(record: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """`record` with a `signature` over its canonical bytes (any earlier one replaced)."""
    public = key.public_key()
    body = {k: v for k, v in record.items() if k != SIGNATURE}
    return body | {
        SIGNATURE: {
            "algorithm": ALGORITHM,
            "public_key": _b64(raw_public_key(public)),
            "key_id": key_id(public),
            "value": _b64(key.sign(canonical_bytes(body))),
        }
    }


def verify(record: Any, key: Ed25519PublicKey) -> None:
    """Raise InvalidRecord unless `record` carries a valid signature by `key`."""
    if not isinstance(record, dict):
        raise InvalidRecord("the record is not a JSON object: it is not an acceptance record")
    signature = record.get(SIGNATURE)
    if signature is None:
        raise InvalidRecord("the record has no signature: it was never signed, or it was removed")
    if not isinstance(signature, dict) or not isinstance(signature.get("value"), str):
        raise InvalidRecord("the record's signature has no value: the record was changed")
    if signature.get("algorithm") != ALGORITHM:
        raise InvalidRecord(
            f"the record is signed with {signature.get('algorithm')!r}; hil signs and checks "
            f"{ALGORITHM} only"
        )
    try:
        value = base64.b64decode(signature["value"], validate=True)
        key.verify(value, canonical_bytes(record))
    except (binascii.Error, InvalidSignature, ValueError):
        claimed = signature.get("key_id")
        other = (
            f" (the record names key {claimed}; the key given is {key_id(key)})"
            if claimed != key_id(key)
            else ""
        )
        raise InvalidRecord(
            f"signature does not match: the record was changed or signed by another key{other}"
        ) from None
    if signature.get("public_key") != _b64(raw_public_key(key)) or signature.get(
        "key_id"
    ) != key_id(key):
        raise InvalidRecord(
            f"the signature holds for key {key_id(key)}, but the record's signature block names "
            f"key {signature.get('key_id')}: the record was changed"
        )


def load_private_key(path: Path, passphrase_env: str | None = None) -> Ed25519PrivateKey:
    """The Ed25519 private key in PEM file `path`, decrypted with the passphrase held in the
    environment variable `passphrase_env` when it is encrypted."""
    data = _read(path, "private")
    passphrase = None
    if passphrase_env is not None:
        value = os.environ.get(passphrase_env)
        if value is None:
            raise KeyFileError(
                f"--key-pass-env {passphrase_env}: the environment variable {passphrase_env} is "
                f"not set; export it with the passphrase of {path}"
            )
        passphrase = value.encode("utf-8")
    try:
        key = serialization.load_pem_private_key(data, passphrase)
    except TypeError:  # encrypted without a passphrase, or a passphrase for a plain key
        if passphrase is None:
            raise KeyFileError(
                f"{path} is encrypted: name the environment variable that holds its passphrase "
                "with --key-pass-env VAR"
            ) from None
        raise KeyFileError(
            f"{path} is not encrypted, yet --key-pass-env {passphrase_env} gives a passphrase "
            "for it; leave --key-pass-env out"
        ) from None
    except ValueError:
        if passphrase is not None and ENCRYPTED_PEM in data:
            raise KeyFileError(
                f"{path}: the passphrase in ${passphrase_env} does not decrypt it; set "
                f"{passphrase_env} to the passphrase the key was encrypted with"
            ) from None
        if PRIVATE_PEM not in data and b"-----BEGIN PUBLIC KEY-----" in data:
            raise KeyFileError(
                f"{path} is a public key; signing needs the private key (PEM PKCS#8), e.g. "
                f"made with `{MAKE_KEY.format(path=path)}`"
            ) from None
        raise KeyFileError(
            f"{path} is not a PEM private key; make an Ed25519 one with "
            f"`{MAKE_KEY.format(path=path)}`"
        ) from None
    except UnsupportedAlgorithm as exc:
        raise KeyFileError(f"{path} cannot be loaded as a private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(
            f"{path} holds a key of another type ({_kind(key)}), not Ed25519; acceptance "
            f"records are signed with Ed25519: `{MAKE_KEY.format(path=path)}`"
        )
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in PEM file `path` (as `openssl pkey -pubout` writes it)."""
    data = _read(path, "public")
    extract = f"openssl pkey -in PRIVATE.pem -pubout -out {path}"
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        if PRIVATE_PEM in data:
            raise KeyFileError(
                f"{path} is a private key; check records with its public key: "
                f"`openssl pkey -in {path} -pubout -out PUB.pem`"
            ) from None
        raise KeyFileError(
            f"{path} is not a PEM public key; write the signer's with `{extract}`"
        ) from None
    except UnsupportedAlgorithm as exc:
        raise KeyFileError(f"{path} cannot be loaded as a public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(
            f"{path} holds a key of another type ({_kind(key)}), not Ed25519: it cannot have "
            "signed a record"
        )
    return key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _read(path: Path, kind: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(
            f"cannot read the {kind} key {path}: {exc.strerror or exc}; check the path"
        ) from None


def _kind(key: object) -> str:
    """ "RSA" for an RSAPrivateKey, "EllipticCurve" for an EllipticCurvePublicKey."""
    return type(key).__name__.split("Private")[0].split("Public")[0]

"""Signatures of acceptance records, proven with openssl; every edit of a record breaks them;
key files that cannot sign are refused with the file named and the fix.

The canonical bytes are made here from the recipe in hil.accept.signing's docstring, not by
calling it, so openssl checks the documented form rather than whatever the code does.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hil.accept.record import write_record
from hil.accept.signing import (
    InvalidRecord,
    KeyFileError,
    load_private_key,
    load_public_key,
    sign,
    verify,
)
from tests.accept.conftest import PASSPHRASE, PASSPHRASE_ENV, KeyPair, openssl, record_of


def documented_canonical(record: dict[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != "signature"}
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def openssl_verifies(pub: Path, data: bytes, signature: bytes, tmp_path: Path) -> bool:
    (tmp_path / "canonical.bin").write_bytes(data)
    (tmp_path / "sig.bin").write_bytes(signature)
    checked = openssl(
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        pub,
        "-rawin",
        "-in",
        tmp_path / "canonical.bin",
        "-sigfile",
        tmp_path / "sig.bin",
    )
    return checked.returncode == 0 and "Signature Verified Successfully" in checked.stdout


def raw_public_key(pub: Path) -> bytes:
    """The 32 raw key bytes: the tail of the DER SubjectPublicKeyInfo openssl writes."""
    command = ["openssl", "pkey", "-pubin", "-in", str(pub), "-outform", "DER"]
    return subprocess.run(command, capture_output=True, check=True).stdout[-32:]


@pytest.fixture
def signed(passing_runs: list[Path], keys: KeyPair, tmp_path: Path) -> dict[str, Any]:
    """A signed record of two passing runs, as read back from the file written."""
    record = record_of(passing_runs)
    record["rig"]["name"] = "Prüfstand 7 ✓"  # characters outside ASCII, signed as UTF-8
    path = tmp_path / "acceptance.json"
    write_record(path, sign(record, load_private_key(keys.private)))
    return json.loads(path.read_text(encoding="utf-8"))


def test_openssl_verifies_hils_signature_over_the_documented_bytes(
    signed: dict[str, Any], keys: KeyPair, tmp_path: Path
) -> None:
    canonical = documented_canonical(signed)
    value = base64.b64decode(signed["signature"]["value"])

    assert "Prüfstand 7 ✓".encode() in canonical  # not \u escapes
    assert openssl_verifies(keys.public, canonical, value, tmp_path)
    assert not openssl_verifies(
        keys.public, canonical.replace(b"passed", b"failed", 1), value, tmp_path
    )
    raw = raw_public_key(keys.public)
    assert signed["signature"]["algorithm"] == "ed25519"
    assert base64.b64decode(signed["signature"]["public_key"]) == raw
    assert signed["signature"]["key_id"] == hashlib.sha256(raw).hexdigest()[:16]


def test_hil_verifies_a_signature_made_by_openssl(
    signed: dict[str, Any], keys: KeyPair, tmp_path: Path
) -> None:
    (tmp_path / "canonical.bin").write_bytes(documented_canonical(signed))
    made = openssl(
        "pkeyutl",
        "-sign",
        "-inkey",
        keys.private,
        "-rawin",
        "-in",
        tmp_path / "canonical.bin",
        "-out",
        tmp_path / "sig.bin",
    )
    assert made.returncode == 0, made.stderr
    by_openssl = copy.deepcopy(signed)
    by_openssl["signature"]["value"] = base64.b64encode(
        (tmp_path / "sig.bin").read_bytes()
    ).decode()

    verify(by_openssl, load_public_key(keys.public))  # raises when the bytes differ


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def edit(record: dict) -> None:
        *parents, last = path.split(".")
        target: Any = record
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return edit


EDITS: dict[str, Callable[[dict], None]] = {
    "flip a verdict": _set("runs.1.tests.2.outcome", "failed"),
    "flip the release verdict": _set("passed", False),
    "change a measurement": _set("runs.0.tests.0.measurements.0.value", 0.43),
    "change a limit": _set("runs.0.tests.0.measurements.0.high", 50.0),
    "change the firmware sha256": lambda r: r["firmware"].update(
        sha256=r["firmware"]["sha256"][:-1] + "0"
    ),
    "change the firmware version": _set("firmware.version", "1.2.1"),
    "change the rig sha256": lambda r: r["rig"].update(sha256="0" + r["rig"]["sha256"][1:]),
    "drop a run": lambda r: r["runs"].pop(),
    "drop a test": lambda r: r["runs"][0]["tests"].pop(),
    "add a space inside a string": _set("rig.name", "Prüfstand 7 ✓ "),
    "add a field": _set("note", "re-run by hand"),
    "a number written as a float": _set("repeat", 2.0),
    "change the repeat count": _set("repeat", 3),
    "say the selection was not the full suites": _set("selection.full_suites", False),
    "change the signature value": lambda r: r["signature"].update(
        value=base64.b64encode(bytes(64)).decode()
    ),
    "change the named key id": _set("signature.key_id", "0" * 16),
    "change the named public key": _set(
        "signature.public_key", base64.b64encode(bytes(32)).decode()
    ),
}


@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
def test_every_edit_of_a_signed_record_fails_verification(
    signed: dict[str, Any], keys: KeyPair, edit: Callable[[dict], None]
) -> None:
    public = load_public_key(keys.public)
    verify(signed, public)  # the untouched record is valid
    tampered = copy.deepcopy(signed)
    edit(tampered)
    assert json.dumps(tampered, sort_keys=True) != json.dumps(signed, sort_keys=True)

    with pytest.raises(InvalidRecord) as failure:
        verify(tampered, public)
    assert "changed" in str(failure.value)


def test_the_files_layout_is_not_signed(signed: dict[str, Any], keys: KeyPair) -> None:
    """Re-indenting the file (what an editor or `jq .` does) keeps every value, so it holds."""
    relaid = json.loads(json.dumps(signed, indent=7, ensure_ascii=True))

    verify(relaid, load_public_key(keys.public))


def test_another_key_and_a_missing_signature_are_named(
    signed: dict[str, Any], keys: KeyPair, other_keys: KeyPair
) -> None:
    intruder = load_public_key(other_keys.public)
    with pytest.raises(InvalidRecord, match="signature does not match") as failure:
        verify(signed, intruder)
    assert signed["signature"]["key_id"] in str(failure.value)

    forged = sign(signed, load_private_key(other_keys.private))  # re-signed by someone else
    with pytest.raises(InvalidRecord, match="signed by another key"):
        verify(forged, load_public_key(keys.public))

    unsigned = {k: v for k, v in signed.items() if k != "signature"}
    with pytest.raises(InvalidRecord, match="has no signature"):
        verify(unsigned, load_public_key(keys.public))
    with pytest.raises(InvalidRecord, match="not a JSON object"):
        verify([signed], load_public_key(keys.public))


def test_an_encrypted_key_signs_with_the_passphrase_from_the_environment(
    encrypted_keys: KeyPair, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    key = load_private_key(encrypted_keys.private, PASSPHRASE_ENV)
    record = sign({"schema": 1, "passed": True}, key)

    verify(record, load_public_key(encrypted_keys.public))
    assert openssl_verifies(
        encrypted_keys.public,
        documented_canonical(record),
        base64.b64decode(record["signature"]["value"]),
        tmp_path,
    )


def _rsa(tmp_path: Path) -> Path:
    path = tmp_path / "rsa.pem"
    made = openssl("genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:1024", "-out", path)
    assert made.returncode == 0, made.stderr
    return path


def _garbage(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("release manager's notes, not a key\n")
    return path


@pytest.mark.parametrize(
    ("make", "env", "expected"),
    [
        (lambda t, k, e: _rsa(t), None, "another type (RSA), not Ed25519"),
        (lambda t, k, e: _garbage(t), None, "not a PEM private key"),
        (lambda t, k, e: t / "missing.pem", None, "cannot read the private key"),
        (lambda t, k, e: k.public, None, "is a public key"),
        (lambda t, k, e: e.private, None, "is encrypted: name the environment variable"),
        (lambda t, k, e: e.private, "wrong", "does not decrypt it"),
        (lambda t, k, e: e.private, "unset", f"{PASSPHRASE_ENV} is not set"),
        (lambda t, k, e: k.private, "right", "is not encrypted"),
    ],
    ids=[
        "rsa",
        "not-pem",
        "missing",
        "public",
        "no-passphrase",
        "wrong-passphrase",
        "unset-variable",
        "passphrase-for-plain-key",
    ],
)
def test_a_key_that_cannot_sign_is_refused_naming_the_file_and_the_fix(
    make, env, expected, keys: KeyPair, encrypted_keys: KeyPair, monkeypatch, tmp_path: Path
) -> None:
    path = make(tmp_path, keys, encrypted_keys)
    passphrases = {"wrong": "Tr0ub4dor&3", "right": PASSPHRASE}
    if env in passphrases:
        monkeypatch.setenv(PASSPHRASE_ENV, passphrases[env])
    else:
        monkeypatch.delenv(PASSPHRASE_ENV, raising=False)

    with pytest.raises(KeyFileError) as refused:
        load_private_key(path, PASSPHRASE_ENV if env else None)
    message = str(refused.value)
    assert expected in message
    assert str(path) in message
    assert PASSPHRASE not in message and "Tr0ub4dor" not in message


def test_a_public_key_file_that_cannot_verify_is_refused(keys: KeyPair, tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="is a private key; check records with its public"):
        load_public_key(keys.private)
    rsa_public = tmp_path / "rsa.pub.pem"
    assert openssl("pkey", "-in", _rsa(tmp_path), "-pubout", "-out", rsa_public).returncode == 0
    with pytest.raises(KeyFileError, match=r"another type \(RSA\)"):
        load_public_key(rsa_public)
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key(_garbage(tmp_path))

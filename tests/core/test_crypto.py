"""The echo cipher against openssl's AES-256-CBC: reference values come from openssl only."""

import pytest

from hil.protocol.crypto import Cipher, DecryptError

from .conftest import IV, KEY, openssl_encrypt

PLAINTEXTS = [
    b"Test Message",
    b"",
    b"x",
    b"a" * 15,
    b"b" * 16,
    b"c" * 17,
    "h\u00e9llo w\u00f6rld \u2603".encode(),
    b'{"cmd":"led","on":true}',
    b"z" * 256,
]


@pytest.fixture
def cipher() -> Cipher:
    return Cipher(KEY, IV)


@pytest.mark.parametrize("plaintext", PLAINTEXTS, ids=lambda p: f"{len(p)}B")
def test_encrypt_matches_openssl(cipher: Cipher, plaintext: bytes) -> None:
    assert cipher.encrypt(plaintext) == openssl_encrypt(plaintext)


@pytest.mark.parametrize("plaintext", PLAINTEXTS, ids=lambda p: f"{len(p)}B")
def test_decrypts_openssl_output(cipher: Cipher, plaintext: bytes) -> None:
    assert cipher.decrypt(openssl_encrypt(plaintext)) == plaintext


def test_hello_is_one_block_of_24_base64_chars(cipher: Cipher) -> None:
    # The seed's example "pXgM7i9m8gQ=" cannot be right: one AES block is 24 base64 chars.
    assert len(cipher.encrypt("Hello")) == 24


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("not base64!!", "base64"),
        ("QUJD", "multiple of 16"),
        ("", "multiple of 16"),
    ],
)
def test_refuses_what_the_device_refuses(cipher: Cipher, payload: str, reason: str) -> None:
    with pytest.raises(DecryptError, match=reason):
        cipher.decrypt(payload)


def test_wrong_key_is_bad_padding_or_garbage(cipher: Cipher) -> None:
    other = openssl_encrypt(b"secret", key=b"F" * 32)
    with pytest.raises(DecryptError):
        cipher.decrypt_text(other)


@pytest.mark.parametrize(("key", "iv"), [(b"short", IV), (KEY, b"short")])
def test_key_and_iv_sizes_are_checked(key: bytes, iv: bytes) -> None:
    with pytest.raises(ValueError, match="bytes"):
        Cipher(key, iv)

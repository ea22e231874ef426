"""Encrypted echo (PROTOCOL.md, seed scenario 1).

The server publishes base64(AES(plaintext)) on the command topic; the device answers on its
status topic with the plaintext, then base64(AES(prefix + plaintext)), shows the message on
the LCD and toggles the status LED. What it cannot decrypt it refuses without crashing.
"""

import base64
import re

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hil.protocol.crypto import Cipher as EchoCipher

pytestmark = [pytest.mark.hil, pytest.mark.asyncio(loop_scope="session")]

# Each payload is made from the profile's plaintext limit `n`, so the boundaries follow it.
PAYLOADS = {
    "seed_test_message": lambda n: "Test Message",
    "empty": lambda n: "",
    "one_byte": lambda n: "x",
    "15_bytes": lambda n: "a" * 15,
    "16_bytes": lambda n: "b" * 16,
    "17_bytes": lambda n: "c" * 17,
    "limit_minus_1": lambda n: "d" * (n - 1),
    "at_limit": lambda n: "e" * n,
    "utf8_multibyte": lambda n: "Gr\u00fc\u00dfe, \u4e16\u754c \u2603 \u00e9t\u00e9",
    "json": lambda n: '{"cmd":"relay","channel":2,"on":true,"seq":417}',
}
SMOKE_PAYLOAD = "seed_test_message"  # the echo merge CI runs (-m smoke)


def lcd_pattern(dut) -> re.Pattern[str]:
    """The LCD line that shows a received message (its prefix comes from the profile)."""
    prefix = re.escape(dut.profile.crypto.lcd_prefix)
    return re.compile(dut.profile.console.lcd.replace("(?P<text>", f"(?P<text>{prefix}", 1))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(make, id=name, marks=pytest.mark.smoke if name == SMOKE_PAYLOAD else ())
        for name, make in PAYLOADS.items()
    ],
)
async def test_echo_answers_plaintext_then_prefixed_ciphertext(dut, measurements, make) -> None:
    text = make(dut.profile.crypto.max_plaintext)
    await dut.current_version()
    console_mark = dut.console.mark()

    reply = await dut.echo(text)

    latency = measurements.record("echo_round_trip", reply.latency_s, "s", high=dut.limits.echo_s)
    assert reply.first.text == text, "the first answer must be the plaintext"
    assert dut.cipher.decrypt_text(reply.second.text) == dut.profile.crypto.echo_prefix + text, (
        "the second answer must be the prefixed plaintext, encrypted with the same key and IV"
    )
    lcd = await dut.console.expect(lcd_pattern(dut), dut.limits.echo_s, since=console_mark)
    shown = lcd["text"][len(dut.profile.crypto.lcd_prefix) :].strip()
    assert shown == text[:16].strip()
    await dut.console.expect(dut.profile.console.led, dut.limits.echo_s, since=console_mark)
    assert latency.passed, str(latency)


async def test_status_led_toggles_on_every_message(dut) -> None:
    await dut.current_version()
    states = []
    for text in ("toggle one", "toggle two", "toggle three"):
        mark = dut.console.mark()
        await dut.echo(text)
        led = await dut.console.expect(dut.profile.console.led, dut.limits.echo_s, since=mark)
        states.append(led["state"])
    assert states[0] != states[1] != states[2], f"LED went {states}, it must alternate"


def _raw_cbc(key: bytes, iv: bytes, blocks: bytes) -> str:
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return base64.b64encode(enc.update(blocks) + enc.finalize()).decode()


def _bad_payloads(dut) -> dict[str, str]:
    key, iv = dut.cipher.key, dut.cipher.iv
    return {
        "wrong_key": EchoCipher(bytes(reversed(key)), iv).encrypt("wrong key here"),
        "bad_base64": "this is not base64!",
        "not_whole_blocks": base64.b64encode(b"0123456789").decode(),
        "bad_padding": _raw_cbc(key, iv, b"A" * 15 + b"\x00"),
        "over_long": dut.cipher.encrypt("f" * (dut.profile.crypto.max_plaintext + 1)),
    }


@pytest.mark.parametrize(
    "kind", ["wrong_key", "bad_base64", "not_whole_blocks", "bad_padding", "over_long"]
)
async def test_undecryptable_command_gets_no_echo_and_device_keeps_working(dut, kind) -> None:
    await dut.current_version()
    console_mark = dut.console.mark()

    bad = await dut.send_command(_bad_payloads(dut)[kind])
    await dut.console.expect(
        dut.profile.console.decrypt_failed, dut.limits.echo_s, since=console_mark
    )
    # The device handles commands in order: once the next good command is answered, any
    # answer to the bad one would already have arrived.
    reply = await dut.echo("still alive")

    answers = [r.text for r in dut.replies_since(bad.index)]
    assert answers[0] == "still alive", f"the bad command was answered: {answers[:2]}"
    assert reply.first.text == "still alive"

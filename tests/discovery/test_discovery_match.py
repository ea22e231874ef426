"""UdevMatch and SerialDevice on their own: what matches, what a port is guessed to be, the TOML."""

import tomllib

import pytest

from hil.discovery import SerialDevice, UdevMatch

ESP32_PROPS = {
    "ID_VENDOR_ID": "303a",
    "ID_MODEL_ID": "1001",
    "ID_SERIAL_SHORT": "F4:12:FA:4B:1C:20",
    "ID_USB_INTERFACE_NUM": "00",
}


def device(vid: str, pid: str, serial: str | None = "X1", interface: str = "00") -> SerialDevice:
    return SerialDevice(
        node="/dev/ttyUSB0",
        by_id=f"/dev/serial/by-id/usb-test_{vid}_{pid}-if{interface}-port0",
        vendor_id=vid,
        product_id=pid,
        serial=serial,
        interface=interface,
        driver="test",
        manufacturer=None,
        model=None,
    )


def test_unset_fields_match_anything():
    assert UdevMatch(vendor_id="303a").matches(ESP32_PROPS)
    assert UdevMatch("303a", "1001", "F4:12:FA:4B:1C:20", "00").matches(ESP32_PROPS)


def test_hex_ids_compare_case_insensitively_but_serial_exactly():
    assert UdevMatch(vendor_id="303A", product_id="1001").matches(ESP32_PROPS)
    assert not UdevMatch(serial="f4:12:fa:4b:1c:20").matches(ESP32_PROPS)


def test_a_property_the_port_lacks_does_not_match():
    assert not UdevMatch(vendor_id="303a", serial="X").matches({"ID_VENDOR_ID": "303a"})
    assert not UdevMatch(product_id="1002").matches(ESP32_PROPS)


def test_an_empty_match_is_refused():
    with pytest.raises(ValueError, match="at least one of vendor_id"):
        UdevMatch()


@pytest.mark.parametrize(
    ("vid", "pid", "interface", "kind"),
    [
        ("303a", "1001", "00", "ESP32-S3 native USB (serial/JTAG)"),
        ("10c4", "ea60", "00", "CP2102 USB serial adapter"),
        ("1a86", "7523", "00", "CH340 (USB serial adapter or LCUS relay)"),
        ("1a86", "55d4", "00", "CH9102 USB serial adapter"),
        ("0403", "6001", "00", "FTDI FT232R USB serial adapter"),
        ("1e0e", "9001", "02", "SIM7600 AT port (interface 02)"),
        ("1e0e", "9001", "03", "SIM7600 modem/PPP port (interface 03)"),
        ("1234", "5678", "00", "unknown USB serial device"),
    ],
)
def test_kind(vid, pid, interface, kind):
    assert device(vid, pid, interface=interface).kind == kind


def test_snippet_is_toml_that_selects_the_port():
    port = device("303a", "1001", serial="F4:12:FA:4B:1C:20")
    rig = tomllib.loads(port.rig_snippet())
    assert rig == {
        "console": {
            "driver": "serial",
            "match": {"vendor_id": "303a", "product_id": "1001", "serial": "F4:12:FA:4B:1C:20"},
        }
    }
    assert UdevMatch(**rig["console"]["match"]).matches(port.properties())


def test_sim7600_snippet_names_the_at_interface():
    at_port = tomllib.loads(device("1e0e", "9001", interface="02").rig_snippet())
    assert at_port["console"]["match"]["interface"] == "02"
    nmea = device("1e0e", "9001", interface="01").rig_snippet()
    assert tomllib.loads(nmea) == {}
    assert "interface 02" in nmea


def test_ch340_snippet_offers_the_lcus_relay_by_id():
    snippet = device("1a86", "7523", serial=None).rig_snippet()
    rig = tomllib.loads(snippet)
    assert rig["console"]["match"] == {"vendor_id": "1a86", "product_id": "7523"}
    assert "no serial number" in snippet
    relay_lines = snippet.split("# [power]\n")[1].splitlines()
    relay = tomllib.loads("[power]\n" + "\n".join(line.removeprefix("# ") for line in relay_lines))
    assert relay["power"] == {
        "driver": "lcus",
        "port": "/dev/serial/by-id/usb-test_1a86_7523-if00-port0",
        "channel": 1,
    }


def test_a_port_without_usb_identity_gets_a_comment_not_a_crash():
    bare = SerialDevice("/dev/ttyUSB9", None, None, None, None, None, None, None, None)
    assert (
        bare.rig_snippet()
        == "# /dev/ttyUSB9 reports no USB identity; a rig can only name it by path"
    )

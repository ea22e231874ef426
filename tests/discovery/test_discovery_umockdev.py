"""Discovery against fake boards: umockdev serves the board descriptions in devices/ to libudev.

Each test runs a fresh Python inside a testbed, since the testbed is a preloaded library that
must be in place before the process starts.
"""

import json
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

DEVICES = Path(__file__).parent / "devices"
HOTPLUG = Path(__file__).parent / "hotplug.py"
ALL_BOARDS = sorted(p.name for p in DEVICES.glob("*.umockdev"))

pytestmark = pytest.mark.skipif(
    shutil.which("umockdev-run") is None,
    reason="umockdev-run is not on PATH (apt-get install umockdev)",
)


def in_testbed(boards: list[str], program: list[str]) -> subprocess.CompletedProcess[str]:
    loads = [arg for board in boards for arg in ("-d", str(DEVICES / board))]
    return subprocess.run(
        ["umockdev-run", *loads, "--", *program],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def discover(boards: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return in_testbed(boards, [sys.executable, "-m", "hil.cli.discover", *args])


def call(boards: list[str], code: str) -> dict:
    """Run `code` in a testbed; it sets `result`, or the exception it raises is reported."""
    wrapper = textwrap.dedent(
        """
        import json
        from hil.discovery import *
        try:
        {code}
        except Exception as exc:
            result = {{"error": type(exc).__name__, "message": str(exc)}}
        print(json.dumps(result))
        """
    ).format(code=textwrap.indent(textwrap.dedent(code), "    "))
    done = in_testbed(boards, [sys.executable, "-c", wrapper])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_discover_lists_every_board_with_kind_and_snippet():
    done = discover(ALL_BOARDS, "--json")
    assert done.returncode == 0, done.stderr
    ports = {port["node"]: port for port in json.loads(done.stdout)}
    assert {node: port["kind"] for node, port in ports.items()} == {
        "/dev/ttyACM0": "ESP32-S3 native USB (serial/JTAG)",
        "/dev/ttyACM1": "ESP32-S3 native USB (serial/JTAG)",
        "/dev/ttyACM2": "CH9102 USB serial adapter",
        "/dev/ttyUSB0": "SIM7600 diag port (interface 00)",
        "/dev/ttyUSB1": "SIM7600 NMEA port (interface 01)",
        "/dev/ttyUSB2": "SIM7600 AT port (interface 02)",
        "/dev/ttyUSB3": "SIM7600 modem/PPP port (interface 03)",
        "/dev/ttyUSB4": "SIM7600 audio port (interface 04)",
        "/dev/ttyUSB5": "CP2102 USB serial adapter",
        "/dev/ttyUSB6": "CH340 (USB serial adapter or LCUS relay)",
        "/dev/ttyUSB7": "FTDI FT232R USB serial adapter",
    }
    esp32 = ports["/dev/ttyACM0"]
    assert esp32["by_id"] == (
        "/dev/serial/by-id/usb-Espressif_USB_JTAG_serial_debug_unit_F4:12:FA:4B:1C:20-if00"
    )
    assert esp32["driver"] == "cdc_acm"
    assert esp32["manufacturer"] == "Espressif"
    assert tomllib.loads(esp32["rig_snippet"])["console"] == {
        "driver": "serial",
        "match": {"vendor_id": "303a", "product_id": "1001", "serial": "F4:12:FA:4B:1C:20"},
    }
    at_port = tomllib.loads(ports["/dev/ttyUSB2"]["rig_snippet"])["console"]["match"]
    assert at_port == {
        "vendor_id": "1e0e",
        "product_id": "9001",
        "serial": "0123456789ABCDEF",
        "interface": "02",
    }
    ch340 = ports["/dev/ttyUSB6"]
    assert ch340["serial"] is None
    assert f'# port = "{ch340["by_id"]}"' in ch340["rig_snippet"]


def test_discover_prints_a_table_then_the_snippets():
    done = discover(["esp32s3.umockdev", "ch340.umockdev"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["NODE", "BY-ID", "VID:PID", "SERIAL", "KIND"]
    assert lines[1].split()[:4] == [
        "/dev/ttyACM0",
        "/dev/serial/by-id/usb-Espressif_USB_JTAG_serial_debug_unit_F4:12:FA:4B:1C:20-if00",
        "303a:1001",
        "F4:12:FA:4B:1C:20",
    ]
    assert lines[2].split()[2:4] == ["1a86:7523", "-"]
    assert (
        'match = { vendor_id = "303a", product_id = "1001", serial = "F4:12:FA:4B:1C:20" }' in lines
    )
    assert '# driver = "lcus"' in lines


def test_discover_with_nothing_plugged_in_says_so():
    done = discover([])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("no USB serial devices found")
    assert json.loads(discover([], "--json").stdout) == []


def test_find_ports_tells_two_identical_boards_apart_by_serial():
    result = call(
        ["esp32s3.umockdev", "esp32s3-second.umockdev", "cp2102.umockdev"],
        """
        second = UdevMatch("303a", "1001", serial="F4:12:FA:80:2D:44")
        result = {
            "found": [d.node for d in find_ports(second)],
            "waited": wait_for_port(second, timeout=5).node,
        }
        """,
    )
    assert result == {"found": ["/dev/ttyACM1"], "waited": "/dev/ttyACM1"}


def test_sim7600_at_port_is_found_by_interface():
    result = call(
        ["sim7600.umockdev", "ftdi-ft232r.umockdev"],
        """result = [d.node for d in find_ports(UdevMatch("1e0e", "9001", interface="02"))]""",
    )
    assert result == ["/dev/ttyUSB2"]


def test_two_matching_boards_are_refused_with_both_listed():
    result = call(
        ["esp32s3.umockdev", "esp32s3-second.umockdev"],
        """wait_for_port(UdevMatch("303a", "1001"), timeout=5)""",
    )
    assert result["error"] == "AmbiguousMatch"
    assert "2 serial ports match vendor_id=303a product_id=1001" in result["message"]
    assert "/dev/ttyACM0 (303a:1001 serial F4:12:FA:4B:1C:20" in result["message"]
    assert "/dev/ttyACM1 (303a:1001 serial F4:12:FA:80:2D:44" in result["message"]
    assert "add `serial`" in result["message"]


def test_missing_board_names_the_match_and_lists_what_is_present():
    result = call(
        ["cp2102.umockdev", "ch340.umockdev"],
        """wait_for_port(UdevMatch("303a", "1001", serial="F4:12:FA:4B:1C:20"), timeout=0.3)""",
    )
    assert result["error"] == "PortNotFound"
    message = result["message"]
    assert "vendor_id=303a product_id=1001 serial=F4:12:FA:4B:1C:20" in message
    assert "within 0.3 s" in message
    assert "/dev/ttyUSB5 (10c4:ea60 serial 0001, CP2102 USB serial adapter)" in message
    assert "/dev/ttyUSB6 (1a86:7523, CH340 (USB serial adapter or LCUS relay))" in message
    assert "`hil discover` lists what is plugged in" in message


# -- a board plugged in while wait_for_port waits: needs libumockdev through GObject introspection


def gi_python() -> str | None:
    """An interpreter that can drive a testbed (python3-gi with gir1.2-umockdev-1.0)."""
    probe = "import gi; gi.require_version('UMockdev', '1.0'); from gi.repository import UMockdev"
    for python in (sys.executable, "/usr/bin/python3"):
        if (
            Path(python).exists()
            and subprocess.run(
                [python, "-c", probe], stderr=subprocess.DEVNULL, check=False
            ).returncode
            == 0
        ):
            return python
    return None


WAITER = """
import json, time
import pyudev
from hil.discovery import UdevMatch, wait_for_port

start = pyudev.Monitor.start
told = []

def start_and_tell(monitor):
    start(monitor)
    if not told:  # poll() calls start() again; only the first one matters
        told.append(True)
        print("ready", flush=True)  # hotplug.py plugs the board in only now

pyudev.Monitor.start = start_and_tell
began = time.monotonic()
try:
    node = wait_for_port(UdevMatch("303a", "1001"), timeout={timeout}).node
except Exception as exc:
    node = f"{{type(exc).__name__}}: {{exc}}"
print(json.dumps({{"node": node, "elapsed": time.monotonic() - began}}))
"""


def plug_in_while_waiting(board: str, timeout: float) -> dict:
    python = gi_python()
    if python is None:
        pytest.skip(
            "no Python with umockdev's GI bindings (apt-get install python3-gi gir1.2-umockdev-1.0)"
        )
    waiter = [sys.executable, "-c", WAITER.format(timeout=timeout)]
    done = subprocess.run(
        ["umockdev-wrapper", python, str(HOTPLUG), str(DEVICES / board), "--", *waiter],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_wait_for_port_wakes_when_the_board_appears():
    result = plug_in_while_waiting("esp32s3.umockdev", timeout=10)
    assert result["node"] == "/dev/ttyACM0"
    assert result["elapsed"] < 5, "woken by the deadline, not by the uevent"


def test_another_board_appearing_does_not_end_the_wait():
    result = plug_in_while_waiting("cp2102.umockdev", timeout=1)
    assert result["node"].startswith("PortNotFound: no serial port matching")
    assert "/dev/ttyUSB5 (10c4:ea60" in result["node"]
    assert result["elapsed"] >= 1

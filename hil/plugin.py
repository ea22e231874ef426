"""The pytest plugin: `--rig`, `--hil-artifacts`, markers, rig validation and per-test artifacts.

Registered by the `pytest11` entry point, so `pytest --rig R test_suites` works anywhere hil
is installed. A bad rig file stops the run before any test. A rig that cannot be brought up
makes every rig test error at once, its diagnosis printed once. After each test the device
must still answer: a panic, an unplanned reboot or silence fails that test, and the device is
restarted before the next. Measurements land in `measurements.json` and JUnit properties.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from hil.artifacts import ArtifactStore
from hil.bringup import DeviceState, RigDown, VersionUnknown
from hil.broker import BrokerError
from hil.lifetime import UNWIND_SIGNALS
from hil.measurements import Measurements
from hil.rig import DEFAULT_RIG, Rig, load_rig
from hil.schema import ConfigError

RIG_KEY = pytest.StashKey[Rig | None]()
RIG_ORIGIN_KEY = pytest.StashKey[str]()
STORE_KEY = pytest.StashKey[ArtifactStore]()
MEASUREMENTS_KEY = pytest.StashKey[Measurements]()
DEVICE_KEY = pytest.StashKey[DeviceState]()
RIG_ERRORS_SEEN_KEY = pytest.StashKey[dict[str, str]]()
# The rig is at fault: error, not fail.
RIG_ERRORS = (RigDown, VersionUnknown, ConfigError, BrokerError)
SUITE_MARKERS = {  # how a lab picks suite tests: `-m smoke` on merges, everything nightly
    "smoke": "one fast test per suite, for merge CI (-m smoke)",
    "slow": 'takes more than a few seconds (deselect with -m "not slow")',
}
CAPABILITY_HINTS = {
    "power": "it has no [power] table",
    "board_power": "it has no [board_power] table",
    "broker_log": "its broker driver does not report client connections (use mosquitto)",
    "proxy": "its [broker] has no proxy = true",
    "http_ota": "its profile does not declare HTTP OTA ([profile.http_ota] enabled = true)",
}


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from hil import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-the-loop")
    group.addoption(
        "--rig",
        metavar="PATH",
        help=f"rig file to run against (default: the virtual rig {DEFAULT_RIG})",
    )
    group.addoption(
        "--hil-artifacts",
        metavar="DIR",
        help="where per-test console logs, MQTT logs and measurements go "
        "(default: hil-artifacts/<timestamp>/)",
    )
    group.addoption(
        "--hil-doctor",
        action="store_true",
        help="check the rig part by part (`hil doctor`, without a power cut) before the first "
        "rig test; a failed check makes every rig test an error",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hil: a test that runs against a rig (hardware or twin)")
    config.addinivalue_line(
        "markers", "needs(capability): skip unless the rig has it (power, broker_log, proxy)"
    )
    registered = {line.split(":")[0].strip() for line in config.getini("markers")}
    for name, text in SUITE_MARKERS.items():
        if name not in registered:
            config.addinivalue_line("markers", f"{name}: {text}")
    given = config.getoption("--rig")
    path = Path(given) if given else Path(config.rootpath) / DEFAULT_RIG
    rig = None
    if given or path.is_file():
        try:
            rig = load_rig(path)
        except ConfigError as exc:
            raise pytest.UsageError(f"hil: bad rig file: {exc}") from None
    config.stash[RIG_KEY] = rig
    config.stash[RIG_ORIGIN_KEY] = "" if given else " (default)"
    root = config.getoption("--hil-artifacts")
    config.stash[STORE_KEY] = ArtifactStore(Path(root) if root else None)
    for sig in UNWIND_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_DFL:
            # SIGTERM from a CI runner, SIGHUP from a closed terminal: unwind like Ctrl-C, so
            # fixtures give the rig back.
            signal.signal(sig, signal.default_int_handler)


def pytest_unconfigure(config: pytest.Config) -> None:
    store = config.stash.get(STORE_KEY, None)
    if store is not None:
        store.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    rig = config.stash.get(RIG_KEY, None)
    if rig is None:
        return ["hil rig: none (pass --rig PATH to run rig tests)"]
    kind = "virtual rig" if rig.sim else "hardware rig"
    return [
        f"hil rig: {rig.path} ({kind}{config.stash[RIG_ORIGIN_KEY]}), "
        f"profile {rig.profile.name}, artifacts {config.stash[STORE_KEY].where}"
    ]


def pytest_runtest_setup(item: pytest.Item) -> None:
    rig = item.config.stash.get(RIG_KEY, None)
    for marker in item.iter_markers("needs"):
        for capability in marker.args:
            if rig is not None and capability not in rig.capabilities:
                hint = CAPABILITY_HINTS.get(capability, "it does not provide it")
                pytest.skip(f"needs {capability}: rig {rig.name!r} lacks it ({hint})")
    device = item.config.stash.get(DEVICE_KEY, None)
    if device is not None and device.down and item.get_closest_marker("hil"):
        raise RigDown(device.down)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    store = item.config.stash[STORE_KEY]
    item.stash[MEASUREMENTS_KEY] = Measurements()
    store.begin_test(item.nodeid)
    try:
        return (yield)
    finally:
        measurements = item.stash[MEASUREMENTS_KEY]
        if measurements.items:
            store.write("measurements.json", measurements.to_json() + "\n")
        store.end_test()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """After a rig test, the device must still answer; a test that broke it is charged."""
    device = getattr(item, "funcargs", {}).get("hil_device")
    if not isinstance(device, DeviceState):
        return (yield)
    marks = device.marks()

    def restarted(problem: str, recovery: str) -> None:
        item.config.hook.pytest_hil_restarted(item=item, problem=problem, recovery=recovery)

    try:
        result = yield
    except Exception as exc:
        device.after_test(marks, failed=exc, restarted=restarted)
        raise
    device.after_test(marks, restarted=restarted)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    if call.when == "teardown":  # before the report is made: it copies the properties
        measurements = item.stash.get(MEASUREMENTS_KEY, None)
        if measurements:
            item.user_properties.extend(measurements.properties())
    report = yield
    if call.excinfo is not None and isinstance(call.excinfo.value, RIG_ERRORS):
        report.longrepr = _rig_error_text(item, call.excinfo.value)
        if call.when == "call":
            # Raised inside the test (the version it needs is unknown, the broker went away):
            # still the rig's fault, so an error wherever results are read, JUnit included,
            # which counts only setup and teardown failures as errors.
            report.when = "setup"
    return report


def _rig_error_text(item: pytest.Item, error: BaseException) -> str:
    """A rig fault's diagnosis in full the first time, then one line pointing back to it."""
    text = f"{type(error).__name__}: {error}"
    seen = item.config.stash.setdefault(RIG_ERRORS_SEEN_KEY, {})
    if text in seen:
        return f"{type(error).__name__}: the same rig error as at {seen[text]}, shown above"
    seen[text] = item.nodeid
    return text


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    device = config.stash.get(DEVICE_KEY, None)
    if device is None:
        return
    if device.down:
        return  # its diagnosis stands in full in the first error above
    if device.online is not None:
        up = device.online
        terminalreporter.write_line(
            f"hil: device came up as {up.version} by {up.means} in {up.seconds:.1f} s "
            f"(boot reason: {up.boot_reason})"
        )
    elif device.unknown and not any(
        device.unknown in shown for shown in config.stash.get(RIG_ERRORS_SEEN_KEY, {})
    ):  # said here only when no test's error said it already
        terminalreporter.write_line(f"hil: {device.unknown}", yellow=True)

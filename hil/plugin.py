"""The pytest plugin: `--rig`, `--hil-artifacts`, markers, rig validation and per-test artifacts.

Registered by the `pytest11` entry point, so `pytest --rig R test_suites` works anywhere hil
is installed. A bad rig file stops the run before any test. A rig that cannot be brought up
makes every rig test error at once, its diagnosis printed once. After each test the device
must still answer: a panic, an unplanned reboot or silence fails that test, and the device is
restarted before the next. Measurements land in `measurements.json` and JUnit properties.

`--rig` given several files or a folder makes a pool (`hil.pool`). With pytest-xdist each
worker claims a free rig of it for its life and the suites spread over the workers (`--dist
loadgroup` unless `--dist` is given, so `xdist_group` keeps tests together); `--each-rig`
runs every rig test once per rig, its id ending in the rig's name, each rig's tests on one
worker (a worker given tests of a rig another worker of the run took refuses it: `RigClaims`).
Each rig's artifacts and run.json are in `<run>/<rig name>/`; reports reach the controller
with the test's own id, without the `@group` xdist's loadgroup adds on its workers.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hil.artifacts import ArtifactStore
from hil.bringup import DeviceState, RigDown, VersionUnknown
from hil.broker import BrokerError
from hil.lifetime import UNWIND_SIGNALS
from hil.measurements import Measurements
from hil.pool import RigClaims, RigPool, RigRun, folder_name, load_pool
from hil.rig import DEFAULT_RIG, Rig
from hil.schema import ConfigError

RIG_KEY = pytest.StashKey[Rig | None]()  # the rig, or a pool's first
RIG_ORIGIN_KEY = pytest.StashKey[str]()
STORE_KEY = pytest.StashKey[ArtifactStore]()  # the run folder (a pool's rigs keep theirs in it)
POOL_KEY = pytest.StashKey[RigPool]()
CLAIMS_KEY = pytest.StashKey[Path]()  # xdist controller, --each-rig: its workers' claims
ITEM_RUN_KEY = pytest.StashKey[RigRun | None]()  # the rig a test runs on
MEASUREMENTS_KEY = pytest.StashKey[Measurements]()
DEVICE_KEY = pytest.StashKey[DeviceState]()
RIG_ERRORS_SEEN_KEY = pytest.StashKey[dict[str, str]]()
# The rig is at fault: error, not fail.
RIG_ERRORS = (RigDown, VersionUnknown, ConfigError, BrokerError)
SUITE_MARKERS = {  # how a lab picks suite tests: `-m smoke` on merges, everything nightly
    "smoke": "one fast test per suite, for merge CI (-m smoke)",
    "slow": 'takes more than a few seconds (deselect with -m "not slow")',
}
POOL_WAIT_S = 300.0  # how long a pool's run waits for a rig other runs hold, unless told
# What the xdist controller tells its workers (config.workerinput).
WORKER_ROOT = "hil_root"
WORKER_ROOT_GIVEN = "hil_root_given"
WORKER_LOADGROUP = "hil_loadgroup"
WORKER_CLAIMS = "hil_claims"  # the run's claims folder, under --each-rig
WORKER_SELECTION = "hil_selection"  # what a worker collected, for the controller (workeroutput)
CAPABILITY_HINTS = {
    "power": "it has no [power] table",
    "board_power": "it has no [board_power] table",
    "broker_log": "its broker driver does not report client connections (use mosquitto)",
    "proxy": "its [broker] has no proxy = true",
    "http_ota": "its profile does not declare HTTP OTA ([profile.http_ota] enabled = true)",
    "tls": "its [broker] does not speak TLS (tls = true)",
}


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from hil import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-the-loop")
    group.addoption(
        "--rig",
        action="append",
        metavar="PATH",
        help=f"rig file to run against, or a folder of them (every *.toml); given several "
        f"times or a folder, a pool: with -n each worker claims a free rig of it "
        f"(default: the virtual rig {DEFAULT_RIG})",
    )
    group.addoption(
        "--each-rig",
        action="store_true",
        help="run every rig test on every rig of the pool, its id ending in the rig's name; "
        "with -n each rig's tests run on one worker",
    )
    group.addoption(
        "--rig-wait",
        metavar="SECONDS",
        type=float,
        help=f"how long to wait for a rig while other runs hold it (default: {POOL_WAIT_S:g} "
        "for a pool; a single rig in use is an error at once)",
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
        "markers",
        "needs(capability): skip unless the rig has it "
        f"({', '.join(CAPABILITY_HINTS)}; every rig has console and mqtt)",
    )
    registered = {line.split(":")[0].strip() for line in config.getini("markers")}
    for name, text in SUITE_MARKERS.items():
        if name not in registered:
            config.addinivalue_line("markers", f"{name}: {text}")
    given = config.getoption("--rig") or []
    default = Path(config.rootpath) / DEFAULT_RIG
    try:
        rigs = load_pool(given or [default], config.invocation_params.dir)
    except ConfigError as exc:
        if given or default.is_file():
            raise pytest.UsageError(f"hil: bad rig file: {exc}") from None
        rigs = []
    each = bool(config.getoption("--each-rig"))
    if each and not rigs:
        raise pytest.UsageError("hil: --each-rig needs rigs to run on: pass --rig PATH")
    config.stash[RIG_KEY] = rigs[0] if rigs else None
    config.stash[RIG_ORIGIN_KEY] = "" if given else " (default)"
    worker = getattr(config, "workerinput", None)
    store = _run_folder(config, worker)
    config.stash[STORE_KEY] = store
    if rigs:
        nested = len(rigs) > 1 or each or worker is not None
        wait = config.getoption("--rig-wait")
        if wait is not None and wait < 0:
            raise pytest.UsageError(
                f"hil: --rig-wait {wait:g}: give the seconds to wait, 0 or more"
            )
        if wait is None and len(rigs) > 1:
            wait = POOL_WAIT_S
        config.stash[POOL_KEY] = RigPool(
            rigs,
            store,
            each=each,
            nested=nested,
            wait_s=wait,
            notice=_late_notice(config),
            first=_worker_number(worker),
            claims=_claims(worker) if each else None,
        )
        _plan_workers(config, rigs, each, bool(given))
    for sig in UNWIND_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_DFL:
            # SIGTERM from a CI runner, SIGHUP from a closed terminal: unwind like Ctrl-C, so
            # fixtures give the rig back.
            signal.signal(sig, signal.default_int_handler)


def _run_folder(config: pytest.Config, worker: dict[str, Any] | None) -> ArtifactStore:
    """The run folder: --hil-artifacts, else one claimed when first needed; on an xdist
    worker, the one its controller claimed for all of them."""
    if worker is not None and WORKER_ROOT in worker:
        store = ArtifactStore(Path(worker[WORKER_ROOT]))
        store.given = worker[WORKER_ROOT_GIVEN]
        return store
    root = config.getoption("--hil-artifacts")
    return ArtifactStore(Path(root) if root else None)


def _worker_number(worker: dict[str, Any] | None) -> int:
    """An xdist worker's number (`gw3`: 3), 0 without xdist."""
    digits = str((worker or {}).get("workerid", "")).lstrip("gw")
    return int(digits) if digits.isdigit() else 0


def _claims(worker: dict[str, Any] | None) -> RigClaims | None:
    """An xdist worker's claims in its run's folder (none without xdist: one process)."""
    if worker is None or WORKER_CLAIMS not in worker:
        return None
    return RigClaims(Path(worker[WORKER_CLAIMS]), worker["workerid"])


def _plan_workers(config: pytest.Config, rigs: list[Rig], each: bool, given: bool) -> None:
    """With -n: group by `xdist_group` unless --dist says otherwise, and no more workers than
    rigs when the run names its rigs (each worker holds one for its life; more would wait)."""
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        if worker.get(WORKER_LOADGROUP):
            config.option.loadgroup = True  # xdist's worker read it from its own arguments
        return
    tx = config.getoption("tx", None)
    if config.getoption("dist", "no") == "no" or not tx or config.option.collectonly:
        return
    known = config.known_args_namespace
    if known.dist == "no" and not known.distload:  # -n alone: xdist chose `load`
        config.option.dist = "loadgroup"
    elif each and config.option.dist != "loadgroup":
        raise pytest.UsageError(
            f"hil: --each-rig runs each rig's tests on the one worker holding that rig, which "
            f"needs --dist loadgroup (the default with -n), not --dist {config.option.dist}"
        )
    if given and len(tx) > len(rigs) and all(spec == "popen" for spec in tx):
        config.option.tx = tx[: len(rigs)]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: every worker's rigs share one run folder, made here once, and under
    --each-rig one claims folder for this run (xdist's testrunuid names it)."""
    config = node.config
    pool = config.stash.get(POOL_KEY, None)
    if pool is None:
        return
    store = config.stash[STORE_KEY]
    store.root.mkdir(parents=True, exist_ok=True)
    node.workerinput[WORKER_ROOT] = str(store.root)
    node.workerinput[WORKER_ROOT_GIVEN] = store.given
    node.workerinput[WORKER_LOADGROUP] = config.option.dist == "loadgroup"
    if pool.each:
        claims = store.root / "_claims" / node.workerinput["testrunuid"]
        config.stash[CLAIMS_KEY] = claims
        node.workerinput[WORKER_CLAIMS] = str(claims)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist controller: a crashed worker's rigs are free for the worker given its tests."""
    claims = node.config.stash.get(CLAIMS_KEY, None)
    if claims is not None and error is not None:
        RigClaims.forget(claims, node.workerinput["workerid"])


@pytest.hookimpl(wrapper=True)
def pytest_report_to_serializable(config: pytest.Config, report: Any):
    """xdist worker: a test's report leaves with the test's id, not xdist's `id@group`, so
    JUnit, the terminal and the cache on the controller name it as it was collected."""
    data = yield
    grouped = "xdist_group" in getattr(report, "keywords", {})  # a test's report, not collection's
    if grouped and isinstance(data, dict) and "nodeid" in data:
        data["nodeid"] = ungrouped(config, data["nodeid"])
    return data


@pytest.hookimpl(trylast=True)  # after the test's own parameters: the rig ends its id
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """--each-rig: a test that uses a rig runs once per rig, grouped by rig for xdist."""
    pool = metafunc.config.stash.get(POOL_KEY, None)
    if pool is None or not pool.each or "hil_rig" not in metafunc.fixturenames:
        return
    params = [
        pytest.param(
            rig.name, id=folder_name(rig.name), marks=pytest.mark.xdist_group(folder_name(rig.name))
        )
        for rig in pool.rigs
    ]
    metafunc.parametrize("hil_rig", params, indirect=True, scope="session")


def pytest_unconfigure(config: pytest.Config) -> None:
    pool = config.stash.get(POOL_KEY, None)
    if pool is not None:
        pool.close()
    claims = config.stash.get(CLAIMS_KEY, None)
    if claims is not None:  # the workers are gone: nothing claims a rig any more
        shutil.rmtree(claims, ignore_errors=True)
        with contextlib.suppress(OSError):
            claims.parent.rmdir()
    store = config.stash.get(STORE_KEY, None)
    if store is not None:
        store.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    rig = config.stash.get(RIG_KEY, None)
    if rig is None:
        return ["hil rig: none (pass --rig PATH to run rig tests)"]
    pool = config.stash[POOL_KEY]
    where = config.stash[STORE_KEY].where
    if len(pool.rigs) > 1 or pool.each:
        names = ", ".join(r.name for r in pool.rigs)
        how = "every rig test on each rig" if pool.each else "each worker claims a free rig"
        workers = len(config.getoption("tx", None) or []) if _distributed(config) else 0
        spread = f", {workers} workers" if workers else ""
        return [f"hil rigs: {len(pool.rigs)} ({names}), {how}{spread}, artifacts {where}"]
    kind = "virtual rig" if rig.sim else "hardware rig"
    return [
        f"hil rig: {rig.path} ({kind}{config.stash[RIG_ORIGIN_KEY]}), "
        f"profile {rig.profile.name}, artifacts {where}"
    ]


def _distributed(config: pytest.Config) -> bool:
    """Whether this is an xdist controller handing tests to workers."""
    return (
        not hasattr(config, "workerinput")
        and config.getoption("dist", "no") != "no"
        and bool(config.getoption("tx", None))
        and not config.option.collectonly
    )


def rig_run(item: pytest.Item) -> RigRun | None:
    """The rig `item` runs on (known once its run protocol has begun), or None."""
    return item.stash.get(ITEM_RUN_KEY, None)


def artifact_store(item: pytest.Item) -> ArtifactStore:
    """Where `item`'s artifacts go: its rig's folder in a pool, else the run folder."""
    run = rig_run(item)
    return run.store if run is not None else item.config.stash[STORE_KEY]


def _uses_rig(item: pytest.Item) -> bool:
    return bool(item.get_closest_marker("hil")) or "hil_rig" in getattr(item, "fixturenames", ())


def _run_for(item: pytest.Item, pool: RigPool | None) -> RigRun | None:
    """Which rig `item` runs on: the only one, the one its --each-rig id names, or the one
    this process claims (the first time a test needs one)."""
    if pool is None:
        return None
    if not pool.nested:
        return pool.run(pool.rigs[0].name)
    if not _uses_rig(item):
        return None
    if pool.each:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("hil_rig") if callspec is not None else None
        return pool.run(name) if name is not None else None
    return pool.claim(bool(item.config.getoption("--hil-doctor")))


def pytest_runtest_setup(item: pytest.Item) -> None:
    run = rig_run(item)
    rig = run.rig if run is not None else item.config.stash.get(RIG_KEY, None)
    for marker in item.iter_markers("needs"):
        for capability in marker.args:
            if rig is not None and capability not in rig.capabilities:
                hint = CAPABILITY_HINTS.get(capability, "it does not provide it")
                pytest.skip(f"needs {capability}: rig {rig.name!r} lacks it ({hint})")
    device = run.device if run is not None else None
    if device is not None and device.down and item.get_closest_marker("hil"):
        raise RigDown(device.down)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    pool = item.config.stash.get(POOL_KEY, None)
    run = item.stash[ITEM_RUN_KEY] = _run_for(item, pool)
    if run is not None:
        store = run.store
        if pool.nested:
            item.user_properties.append(("hil.rig", run.name))
    else:  # a pool's rigs keep their own folders; a test on none of them gets none
        store = None if pool is not None and pool.nested else item.config.stash[STORE_KEY]
    item.stash[MEASUREMENTS_KEY] = Measurements()
    if store is not None:
        store.begin_test(plain_nodeid(item))
    try:
        return (yield)
    finally:
        measurements = item.stash[MEASUREMENTS_KEY]
        if store is not None:
            if measurements.items:
                store.write("measurements.json", measurements.to_json() + "\n")
            store.end_test()


def plain_nodeid(item: pytest.Item) -> str:
    """The test's id without the `@group` xdist's loadgroup adds to it on a worker."""
    return ungrouped(item.config, item.nodeid)


def ungrouped(config: pytest.Config, nodeid: str) -> str:
    """`nodeid` without the `@group` xdist's loadgroup adds after the test's name and id."""
    if config.getoption("loadgroup", False) and nodeid.rfind("@") > nodeid.rfind("]"):
        return nodeid[: nodeid.rfind("@")]
    return nodeid


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items and hasattr(items[0].config, "workeroutput"):
        selection = items[0].config.workeroutput.setdefault(WORKER_SELECTION, {})
        selection["deselected"] = selection.get("deselected", 0) + len(items)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """xdist worker: what it collected, for the controller's check that a run used a rig."""
    output = getattr(session.config, "workeroutput", None)
    if output is None:
        return
    selection = output.setdefault(WORKER_SELECTION, {})
    selection["items"] = [plain_nodeid(item) for item in session.items[:3]]
    selection["count"] = len(session.items)
    selection["hil"] = sum(1 for item in session.items if item.get_closest_marker("hil"))
    selection["errors"] = session.testsfailed


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
    seen[text] = plain_nodeid(item)
    return text


def terminal_notice(config: pytest.Config) -> Callable[[str], None] | None:
    """A line on the terminal at once, past pytest's capture: a place's queue, a pool's wait.

    An xdist worker's terminal is not shown, but its stderr is the controller's: there the
    line goes to stderr, after the worker's id.
    """
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    worker = getattr(config, "workerinput", None)
    if capture is None or (terminal is None and worker is None):
        return None

    def notice(text: str) -> None:
        with capture.global_and_fixture_disabled():
            if worker is not None:
                print(f"[{worker['workerid']}] {text}", file=sys.stderr, flush=True)
            else:
                terminal.write_line(text)

    return notice


def _late_notice(config: pytest.Config) -> Callable[[str], None]:
    """terminal_notice, looked up when there is something to say (the terminal comes later)."""

    def notice(text: str) -> None:
        show = terminal_notice(config)
        if show is None:
            print(text, file=sys.stderr, flush=True)
        else:
            show(text)

    return notice


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    pool = config.stash.get(POOL_KEY, None)
    if pool is not None and pool.nested:
        return  # each rig's line comes with its run.json (hil.report)
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

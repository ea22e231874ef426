"""The report of a real run with a failing test, opened in Debian's Chromium through Playwright.

One short `hil run` on the virtual rig with the twin's `echo_no_prefix` fault (an echo test
fails, an OTA test passes) makes the run folder; two earlier nights are copies of it with
their start moved back, added with it to a real history store. The page must load with no
script error and no request beyond its own file, show the failing test's console lines and
message as visible text, and draw its plots: the measurements, the OTA progress and the trend.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from hil.report.history import History
from hil.report.html import write_report

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SELECTED = "seed_test_message or drop_middle"
ECHO = "test_suites/test_echo.py::test_echo_answers_plaintext_then_prefixed_ciphertext"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(),
    reason=f"{CHROMIUM} is missing: install Debian's chromium package to open the report",
)


def hil_run(work: Path) -> Path:
    """One real run on a copy of the virtual rig whose twin drops the echo's prefix."""
    rig = work / "sim.toml"
    text = (ROOT / "rigs" / "sim.toml").read_text()
    rig.write_text(text.replace("[sim]\n", '[sim]\nfaults = ["echo_no_prefix"]\n', 1))
    run = work / "run"
    command = [sys.executable, "-c", "import sys; from hil.cli import main; sys.exit(main())"]
    command += ["run", "--rig", str(rig), "-p", "no:cacheprovider", "--hil-artifacts", str(run)]
    command += ["-q", "-k", SELECTED, str(ROOT / "test_suites")]
    done = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HIL_LOCK_DIR": str(work / "locks")},
    )
    assert done.returncode == 1, f"the echo test must fail:\n{done.stdout[-3000:]}{done.stderr}"
    assert (run / "run.json").is_file(), done.stdout[-3000:]
    return run


def earlier_night(run: Path, days: int, firmware: str, scale: float) -> Path:
    """A copy of `run` started `days` earlier on `firmware`, its measurements times `scale`."""
    copy = run.with_name(f"{run.name}-{days}d-earlier")
    shutil.copytree(run, copy)
    facts = json.loads((copy / "run.json").read_text())
    facts["started"] = (datetime.fromisoformat(facts["started"]) - timedelta(days=days)).isoformat()
    facts["firmware"]["version"] = firmware
    (copy / "run.json").write_text(json.dumps(facts))
    for path in copy.glob("*/measurements.json"):
        items = json.loads(path.read_text())
        path.write_text(json.dumps([m | {"value": m["value"] * scale} for m in items]))
    return copy


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the report, its run folder): the real run, reported with a three-night history."""
    work = tmp_path_factory.mktemp("report")
    run = hil_run(work)
    history = work / "history.sqlite"
    with History(history) as store:
        for night in (earlier_night(run, 2, "0.9.0", 1.3), earlier_night(run, 1, "1.0.0", 0.8)):
            store.add_run(night)
        store.add_run(run)
    return write_report([run], work / "report.html", history=history), run


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport={"width": 1300, "height": 900},
        )
        yield context
        context.close()


def failing_console_lines(run: Path) -> tuple[str, list[str]]:
    """The failed test's message and its last console lines, read from the artifacts."""
    facts = json.loads((run / "run.json").read_text())
    [failed] = [t for t in facts["tests"] if t["outcome"] == "failed"]
    assert failed["nodeid"].startswith(ECHO)
    lines = (run / failed["folder"] / "console.log").read_text().splitlines()
    texts = [line.partition(" ")[2] for line in lines]
    return failed["message"], [t for t in texts if t.strip()][-3:]


def test_the_report_opens_with_its_failure_and_plots_in_chromium(report, browser, tmp_path) -> None:
    out, run = report
    page = browser.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("request", lambda request: requests.append(request.url))
    page.goto(out.as_uri(), wait_until="load")
    assert errors == []

    message, lines = failing_console_lines(run)
    failure = page.locator("article.failure")
    assert failure.count() == 1
    assert failure.locator(".message").inner_text() == message
    shown = failure.locator("table.lines td.text")
    for line in lines:
        assert shown.filter(has_text=line).first.is_visible(), f"{line!r} is not shown"

    # Measurements against limits, drawn with their points, without opening anything.
    echo = page.locator("svg.plot", has=page.locator("title", has_text="echo_round_trip (s)"))
    assert echo.first.is_visible() and _has_area(echo.first.locator(".point").first)
    # The trend of the failing test's echo latency: one point per night.
    trend = page.locator(f"#trends figure[data-nodeid^='{ECHO}'] svg.plot").first
    assert trend.is_visible() and trend.locator(".point").count() == 3
    assert _has_area(trend.locator(".point").last)

    # The passed OTA test is folded; expanding shows its progress plot, drawn.
    ota = page.locator("svg.plot", has=page.locator("title", has_text="OTA update: progress"))
    assert not ota.first.is_visible()
    page.click("#expand")
    assert ota.first.is_visible() and ota.first.locator(".point").count() > 25
    assert _has_area(ota.first.locator(".point").first)

    # The filter box hides the tests it does not name.
    page.fill("#filter", "drop_middle")
    assert not page.locator("details.test", has_text="seed_test_message").first.is_visible()
    assert page.locator("details.test", has_text="drop_middle").first.is_visible()
    page.fill("#filter", "")

    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert errors == []
    assert requests == [out.as_uri()], "the report must fetch nothing but itself"
    page.close()


def _has_area(locator) -> bool:
    box = locator.bounding_box()
    return box is not None and box["width"] > 0 and box["height"] > 0

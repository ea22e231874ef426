"""The HTML report from run folders written to the artifacts contract: failures first with the
lines before them, device text escaped, nothing fetched from outside, plots that put values
against their limits, OTA progress from the MQTT records, trends and regressions from the real
history store, and `hil report`'s defaults and refusals.

The documents are read back with the standard library's HTML and XML parsers, never with the
report's own code.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest

from hil.cli import main as hil
from hil.report.history import History
from hil.report.html import ReportError, write_report
from hil.report.plots import nice_ticks

ZONE = timezone(timedelta(hours=2))  # the run host's zone: not the machine's, not UTC
T0 = datetime(2026, 3, 4, 22, 15, 0, tzinfo=ZONE)
ECHO = "test_suites/test_echo.py::test_echo_answers_plaintext_then_prefixed_ciphertext[{}]"
OTA = "test_suites/test_ota.py::test_ota_delivers_the_image_despite[drop_middle]"
RECOVERY = "test_suites/test_recovery.py::test_recovers_after_power_cut[medium]"
SVG = "{http://www.w3.org/2000/svg}"


# --- run folders as hil writes them ---


@dataclass
class Spec:
    """A test to write: its verdict, its console lines and MQTT records at seconds from start."""

    nodeid: str
    outcome: str = "passed"
    seconds: float = 4.0
    console: list[tuple[float, str]] = field(default_factory=list)
    mqtt: list[tuple[float, str, str, str]] = field(default_factory=list)  # t, dir, topic, text
    measurements: list[dict] = field(default_factory=list)
    message: str | None = None


def local(moment: datetime) -> str:
    """A log line's time as hil writes it: the host's local clock, no zone."""
    return moment.astimezone(ZONE).replace(tzinfo=None).isoformat(timespec="milliseconds")


def measured(name: str, value: float, unit: str, low=None, high=None) -> dict:
    passed = (low is None or value >= low) and (high is None or value <= high)
    return {"name": name, "value": value, "unit": unit, "low": low, "high": high, "passed": passed}


def write_run(
    root: Path,
    specs: list[Spec],
    started: datetime = T0,
    firmware: str = "1.0.0",
    rig: str = "virtual",
) -> Path:
    root.mkdir(parents=True)
    entries, at = [], started + timedelta(seconds=1)
    for n, spec in enumerate(specs):
        folder = root / f"{n:04d}-{spec.nodeid.replace('/', '_').replace('::', '__')}"
        folder.mkdir()
        ended = at + timedelta(seconds=spec.seconds)
        (folder / "console.log").write_text(
            "".join(f"{local(at + timedelta(seconds=t))} {text}\n" for t, text in spec.console)
        )
        (folder / "mqtt.jsonl").write_text(
            "".join(
                json.dumps(
                    {
                        "time": local(at + timedelta(seconds=t)),
                        "dir": direction,
                        "topic": topic,
                        "qos": 1,
                        "payload": text,
                        "encoding": "utf-8",
                    }
                )
                + "\n"
                for t, direction, topic, text in spec.mqtt
            )
        )
        (folder / "measurements.json").write_text(json.dumps(spec.measurements))
        entry = {
            "nodeid": spec.nodeid,
            "suite": spec.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py"),
            "outcome": spec.outcome,
            "duration_s": spec.seconds,
            # As a plugin may write them: in UTC, while the logs are in the host's zone.
            "started": at.astimezone(UTC).isoformat(),
            "ended": ended.astimezone(UTC).isoformat(),
            "folder": folder.name,
            "message": spec.message,
        }
        longrepr = f"Traceback ...\nE   {spec.message}" if spec.message else None
        (folder / "result.json").write_text(json.dumps(entry | {"longrepr": longrepr}))
        entries.append(entry)
        at = ended + timedelta(seconds=0.5)
    counts = {o: sum(e["outcome"] == o for e in entries) for o in ("passed", "failed", "error")}
    counts["skipped"] = sum(e["outcome"] == "skipped" for e in entries)
    run = {
        "schema": 1,
        "rig": {"name": rig, "file": "/lab/rigs/sim.toml", "sha256": "ab" * 32, "kind": "virtual"},
        "profile": "reference",
        "hil_version": "0.1.0",
        "firmware": {
            "version": firmware,
            "sha256": None,
            "project": None,
            "idf_version": None,
            "build_date": None,
            "build_time": None,
            "path": None,
            "method": None,
            "written": None,
        },
        "device": {
            "online_version": firmware,
            "boot_reason": "board power cycle",
            "means": "board power cycle",
            "bringup_s": 1.2,
        },
        "host": "lab-pc",
        "started": started.isoformat(),
        "ended": at.isoformat(),
        "suites_revision": "0123abc",
        "suites_dirty": False,
        "outcome": "failed" if counts["failed"] else "passed",
        "counts": counts,
        "tests": entries,
    }
    (root / "run.json").write_text(json.dumps(run, indent=2))
    return root


def chunk(number: int, size: int = 508) -> str:
    """An OTA chunk as PROTOCOL.md gives it: base64(be32(number) + data)."""
    return base64.b64encode(struct.pack(">I", number) + bytes([number]) * size).decode()


# --- reading the document back ---


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def all(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if (tag is None or child.tag == tag) and (
                    cls is None or cls in child.attrs.get("class", "").split()
                ):
                    found.append(child)
                found.extend(child.all(tag, cls))
        return found


VOID = {"meta", "input", "br", "img", "link", "hr", "wbr", "source"}
SVG_LEAVES = {"line", "rect", "circle", "path"}  # self-closed in the SVG the report writes


class Tree(HTMLParser):
    """The document as nested nodes; a closing tag that does not match is an error."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]
        self.feed(html)
        self.close()
        assert len(self.stack) == 1, f"unclosed: {[n.tag for n in self.stack[1:]]}"

    def handle_starttag(self, tag: str, attrs: list) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(path: Path) -> Node:
    return Tree(path.read_text(encoding="utf-8")).root


def svgs(path: Path) -> list[ET.Element]:
    """Every inline SVG, parsed as the XML it must be."""
    html = path.read_text(encoding="utf-8")
    found, start = [], html.find("<svg")
    while start != -1:
        end = html.index("</svg>", start) + len("</svg>")
        found.append(ET.fromstring(html[start:end]))
        start = html.find("<svg", end)
    return found


def row_texts(table: Node) -> list[str]:
    return [tr.all("td")[-1].text() for tr in table.all("tr")]


# --- the report ---


def failing_run(root: Path) -> Path:
    console = [(0.1 * k, f"line {k}") for k in range(30)]
    console[24] = (2.4, "Guru Meditation Error: Core  0 panic'ed (LoadProhibited)")
    console.append((5.0, "after the test ended"))  # the next test's early line, in this file
    return write_run(
        root,
        [
            Spec(
                ECHO.format("seed"),
                "failed",
                seconds=3.2,
                console=console,
                mqtt=[(0.15, "out", "server_cmd", "qNOY0tmppmDP1kJJYmmTIA==")],
                measurements=[measured("echo_round_trip", 0.09, "s", high=5.0)],
                message="AssertionError: the second answer must be the prefixed plaintext",
            ),
            Spec(
                ECHO.format("empty"), measurements=[measured("echo_round_trip", 5.0, "s", high=5)]
            ),
            Spec(ECHO.format("json"), measurements=[measured("echo_round_trip", 6.5, "s", high=5)]),
        ],
    )


def test_a_failure_comes_first_with_the_lines_before_it_ended(tmp_path) -> None:
    out = write_report([failing_run(tmp_path / "run")], tmp_path / "report.html")
    doc = parse(out)
    [failure] = doc.all("article", "failure")
    assert (
        "the second answer must be the prefixed plaintext" in failure.all(cls="message")[0].text()
    )
    # Ended 3.2 s in: the 20 lines before it (console and MQTT merged by time), not the later one.
    window = row_texts(failure.all("table", "lines")[-1])
    expected = [f"line {k}" for k in range(10, 30)]
    expected[24 - 10] = "Guru Meditation Error: Core  0 panic'ed (LoadProhibited)"
    assert window == expected  # not the MQTT record at 0.15 s, nor the line after the end
    [panic] = [tr for tr in failure.all("tr") if "Guru Meditation" in tr.text()]
    assert "bad" in panic.attrs["class"].split()
    # The failure section is before the tests, whose full timeline stays folded.
    html = out.read_text()
    assert html.index("class='failure") < html.index("<h3>Tests</h3>")
    entry = next(d for d in doc.all("details", "test") if "[seed]" in d.attrs["data-nodeid"])
    assert "open" in entry.attrs
    [full] = entry.all("details", "inner")
    assert "open" not in full.attrs
    assert "after the test ended" in full.text() and "qNOY0tmppmDP1kJJYmmTIA==" in full.text()


def test_log_times_are_read_in_the_runs_zone(tmp_path) -> None:
    out = write_report([failing_run(tmp_path / "run")], tmp_path / "report.html")
    [failure] = parse(out).all("article", "failure")
    first = failure.all("table", "lines")[-1].all("tr")[0].all("td")
    # Line 10 was written 1.0 s after the test started, at 22:15:02 on the host's clock.
    assert [first[0].text(), first[1].text()] == ["22:15:02.000", "+1.000"]


def test_device_text_is_escaped(tmp_path) -> None:
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)> & </td></table>"
    run = write_run(
        tmp_path / "run",
        [
            Spec(
                ECHO.format("x"),
                "failed",
                console=[(0.1, hostile)],
                mqtt=[(0.2, "in", "<b>topic</b>", hostile)],
                message=hostile,
            )
        ],
    )
    out = write_report([run], tmp_path / "report.html")
    doc = parse(out)
    assert len(doc.all("script")) == 1  # the report's own
    assert not doc.all("img") and not doc.all("b")  # no element came from the device
    assert hostile in doc.all("article", "failure")[0].text()
    assert "<b>topic</b>" in doc.text()


def test_the_report_needs_nothing_from_outside(tmp_path) -> None:
    out = write_report([failing_run(tmp_path / "run")], tmp_path / "report.html")
    doc = parse(out)
    [policy] = [
        m for m in doc.all("meta") if m.attrs.get("http-equiv") == "Content-Security-Policy"
    ]
    assert "default-src 'none'" in policy.attrs["content"]
    assert not doc.all("link") and not doc.all("iframe") and not doc.all("object")
    for node in doc.all():
        for name in ("src", "href", "action", "srcset"):
            assert node.attrs.get(name, "#").startswith("#"), (node.tag, node.attrs)
    assert all(not s.attrs.get("src") for s in doc.all("script"))
    style = "".join(s.text() for s in doc.all("style"))
    assert "url(" not in style and "@import" not in style


def test_measurements_are_plotted_against_their_limits(tmp_path) -> None:
    out = write_report([failing_run(tmp_path / "run")], tmp_path / "report.html")
    [echo] = [s for s in svgs(out) if s.find(f"{SVG}title").text == "echo_round_trip (s)"]
    [limit] = [line for line in echo.iter(f"{SVG}line") if line.get("class") == "limit"]
    dots = [p for p in echo.iter() if p.get("class") == "point"]
    assert len(dots) == 3 and echo.get("data-points") == "3"
    # The value equal to its limit sits on the limit line; the one over it is a cross past it.
    at_limit = next(p for p in dots if "[empty]" in p.find(f"{SVG}title").text)
    assert float(at_limit.get("cx")) == pytest.approx(float(limit.get("x1")), abs=0.1)
    over = next(p for p in dots if "[json]" in p.find(f"{SVG}title").text)
    assert over.tag == f"{SVG}path" and "out of limits" in over.find(f"{SVG}title").text
    assert float(over.get("d")[1:].split(",")[0]) + 3.5 > float(limit.get("x1"))


def test_measurement_rows_are_named_by_what_tells_the_tests_apart(tmp_path) -> None:
    recovery = "test_suites/test_recovery.py::test_recovers_"
    run = write_run(
        tmp_path / "run",
        [
            Spec(f"{recovery}after_power_cut[short]", measurements=[measured("recovery", 1, "s")]),
            Spec(
                f"{recovery}after_three_cuts_in_a_row",
                measurements=[measured(f"recovery_{n}", 1, "s") for n in (1, 2)],
            ),
            Spec(
                f"{recovery}from_cut_during_registration",
                measurements=[measured("recovery", 1, "s")],
            ),
        ],
    )
    out = write_report([run], tmp_path / "report.html")
    [chart] = [s for s in svgs(out) if s.find(f"{SVG}title").text == "recovery (s)"]
    labels = [
        t.find(f"{SVG}title").text
        for t in chart.iter(f"{SVG}text")
        if t.find(f"{SVG}title") is not None
    ]
    assert labels == [
        "after_power_cut[short]",
        "after_three_cuts_in_a_row · recovery_1",
        "after_three_cuts_in_a_row · recovery_2",
        "from_cut_during_registration",
    ]


def test_ota_progress_and_retransmissions_come_from_the_mqtt_records(tmp_path) -> None:
    fw, st = "firmware/update", "esp32_status"
    mqtt = [
        (0.0, "out", fw, "OTA:BEGIN:2032"),
        (0.1, "in", st, "OTA:READY:2032"),
        (0.2, "out", fw, chunk(0)),
        (0.3, "out", fw, chunk(1)),
        (0.4, "out", fw, chunk(3)),  # chunk 2 dropped by the sender's plan
        (0.5, "in", st, "OTA:PROGRESS:1/4"),
        (0.6, "in", st, "OTA:REQUEST:2"),
        (0.7, "out", fw, chunk(2)),
        (0.8, "out", fw, chunk(3)),  # sent again
        (0.9, "in", st, "OTA:PROGRESS:3/4"),
        (1.0, "out", fw, "OTA:END"),
        (1.1, "in", st, "OTA:SUCCESS"),
    ]
    run = write_run(tmp_path / "run", [Spec(OTA, mqtt=mqtt)])
    out = write_report([run], tmp_path / "report.html")
    progress, resent = [s for s in svgs(out) if "OTA update" in s.find(f"{SVG}title").text]
    assert progress.find(f"{SVG}title").text == "OTA update: progress of 4 chunks, success"
    tips = [p.find(f"{SVG}title").text for p in progress.iter() if p.get("class") == "point"]

    def said(series: str) -> list[str]:
        return [t.removeprefix(f"{series}: ") for t in tips if t.startswith(f"{series}: ")]

    assert said("sent") == ["0", "1", "3", "2"]
    assert said("sent again") == ["3"]
    assert said("OTA:REQUEST") == ["2"]
    assert said("written (OTA:PROGRESS)") == ["1", "3"]
    assert resent.find(f"{SVG}title").text == "OTA update: 1 chunk resent"
    # The timeline names chunks by number instead of showing their base64.
    timeline = parse(out).all("details", "inner")[0].text()
    assert "chunk 3 (508 data bytes)" in timeline and chunk(3)[:40] not in timeline


def test_nice_ticks_are_round_and_cover_the_values() -> None:
    for low, high in ((0, 0.093), (0, 5.0), (0.4, 17.2), (0, 1966080), (3.0, 3.0)):
        ticks = nice_ticks(low, high)
        assert ticks[0] <= low and ticks[-1] >= high and 3 <= len(ticks) <= 8
        step = ticks[1] - ticks[0]
        mantissa = step / 10 ** math.floor(math.log10(step))
        assert round(mantissa, 6) in (1, 2, 2.5, 5)
    assert nice_ticks(0, 0.093) == [0, 0.025, 0.05, 0.075, 0.1]
    assert nice_ticks(0, 7) == [0, 2, 4, 6, 8]


def test_several_runs_get_a_section_each(tmp_path) -> None:
    first = failing_run(tmp_path / "first")
    second = write_run(tmp_path / "second", [Spec(ECHO.format("seed"))], T0 + timedelta(hours=1))
    out = write_report([first, second], tmp_path / "report.html")
    doc = parse(out)
    sections = doc.all("section", "run")
    assert [s.all("h2")[0].text().split()[1] for s in sections] == ["first", "second"]
    assert [a.attrs["href"] for a in doc.all("a") if a.text() in ("first", "second")] == [
        "#r0",
        "#r1",
    ]


def test_a_run_whose_device_never_came_up_still_reports(tmp_path) -> None:
    run = write_run(tmp_path / "run", [])
    facts = json.loads((run / "run.json").read_text())
    facts["device"] = {
        "online_version": None,
        "boot_reason": None,
        "means": None,
        "bringup_s": None,
    }
    (run / "run.json").write_text(json.dumps(facts))
    doc = parse(write_report([run], tmp_path / "report.html"))
    assert "never came online" in doc.text()


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda run: (run / "run.json").unlink(), "run.json is missing"),
        (lambda run: (run / "run.json").write_text("{"), "cannot be read as JSON"),
        (lambda run: (run / "run.json").write_text('{"schema": 2}'), "has schema 2"),
    ],
)
def test_a_broken_run_is_one_error_naming_the_file_and_writes_nothing(
    tmp_path, damage, said
) -> None:
    good, bad = failing_run(tmp_path / "good"), failing_run(tmp_path / "bad")
    damage(bad)
    out = tmp_path / "report.html"
    out.write_text("the previous report")
    with pytest.raises(ReportError, match=said) as error:
        write_report([good, bad], out)
    assert str(bad / "run.json") in str(error.value)
    assert out.read_text() == "the previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "good", "report.html"]


# --- history ---


def nights(base: Path) -> tuple[list[Path], Path]:
    """Five runs, the last three on new firmware, the very last with a recovery 40 % slower
    than the median of those before it; an echo test that flaked on the new firmware."""
    recoveries = [10.0, 11.0, 10.0, 9.0, 14.0]
    echo = ["passed", "passed", "passed", "failed", "passed"]
    history = base / "history.sqlite"
    runs = []
    for n, (recovery, outcome) in enumerate(zip(recoveries, echo, strict=True)):
        run = write_run(
            base / f"2026030{n + 1}-221500-000000",
            [
                Spec(RECOVERY, measurements=[measured("recovery", recovery, "s", high=20.0)]),
                Spec(ECHO.format("seed"), outcome, message="AssertionError: late" * (n == 3)),
            ],
            started=T0 + timedelta(days=n),
            firmware="1.0.0" if n < 2 else "1.1.0",
        )
        with History(history) as store:
            store.add_run(run)
        runs.append(run)
    return runs, history


def test_trends_flakes_and_regressions_from_the_history(tmp_path) -> None:
    runs, history = nights(tmp_path)
    out = write_report([runs[-1]], tmp_path / "report.html", history=history)
    doc = parse(out)
    html = out.read_text()
    # The regression is at the top, before the run.
    [alerts] = doc.all("section", "alerts")
    assert html.index("id='regressions'") < html.index("class='block run'")
    assert "recovery" in alerts.text() and "40% worse" in alerts.text()
    assert "median 10 s" in alerts.text()
    # The trend: one point per run, coloured by firmware version, named in its tooltip.
    [trend] = [f for f in doc.all("figure") if f.attrs.get("data-nodeid") == RECOVERY]
    assert len(trend.all("svg")) == 1
    [svg] = [
        s
        for s in svgs(out)
        if s.find(f"{SVG}title").text == "recovery (s)" and s.get("data-points") == "5"
    ]
    dots = list(svg.iter(f"{SVG}circle"))
    colours = [d.get("fill") for d in dots]
    assert colours[0] == colours[1] != colours[2] == colours[3] == colours[4]
    assert ["firmware 1.0.0" in d.find(f"{SVG}title").text for d in dots] == [1, 1, 0, 0, 0]
    assert "14 s" in dots[-1].find(f"{SVG}title").text
    # The flaky test over its runs on the newest run's rig and firmware: 3 runs, 1 failure.
    [flake] = [tr for tr in doc.all("tr") if tr.attrs.get("data-nodeid") == ECHO.format("seed")]
    assert [td.text() for td in flake.all("td")[1:]] == ["3", "1", "2", "33%"]


def test_a_run_not_in_the_history_is_named_not_judged(tmp_path) -> None:
    _, history = nights(tmp_path)
    other = write_run(tmp_path / "other", [Spec(ECHO.format("seed"))], T0 + timedelta(days=9))
    doc = parse(write_report([other], tmp_path / "report.html", history=history))
    assert "Run other is not in" in doc.all("section")[0].text()


def test_a_missing_history_file_is_refused_not_created(tmp_path) -> None:
    run = failing_run(tmp_path / "run")
    with pytest.raises(ReportError, match="does not exist"):
        write_report([run], tmp_path / "report.html", history=tmp_path / "nope.sqlite")
    assert not (tmp_path / "nope.sqlite").exists()


# --- hil report ---


def test_hil_report_takes_the_newest_finished_run_and_its_history(
    tmp_path, monkeypatch, capsys
) -> None:
    runs, _ = nights(tmp_path / "hil-artifacts")
    (tmp_path / "hil-artifacts" / "20260309-000000-000000").mkdir()  # still running: no run.json
    monkeypatch.chdir(tmp_path)
    assert hil(["report"]) == 0
    said = capsys.readouterr().out.strip()
    report = runs[-1] / "report.html"
    assert said == (
        f"hil report: wrote {Path('hil-artifacts') / runs[-1].name / 'report.html'} "
        f"with trends from {Path('hil-artifacts') / 'history.sqlite'}"
    )
    assert "id='trends'" in report.read_text()


def test_hil_report_of_several_runs_writes_one_file_here(tmp_path, monkeypatch, capsys) -> None:
    first = failing_run(tmp_path / "a")
    second = write_run(tmp_path / "b", [Spec(ECHO.format("seed"))], T0 + timedelta(hours=1))
    monkeypatch.chdir(tmp_path)
    assert hil(["report", "a", "b"]) == 0
    assert capsys.readouterr().out == "hil report: wrote report.html\n"
    assert len(parse(tmp_path / "report.html").all("section", "run")) == 2
    assert hil(["report", str(first), str(second), "-o", "out/r.html"]) == 0
    assert (tmp_path / "out" / "r.html").is_file()


def test_hil_report_refuses_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert hil(["report"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no finished run under" in err and "hil report PATH" in err
    (tmp_path / "run").mkdir()
    assert hil(["report", "run"]) == 1
    assert "run.json is missing" in capsys.readouterr().err
    assert not (tmp_path / "run" / "report.html").exists()

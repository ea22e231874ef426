"""One test's console lines and MQTT messages on one time axis, and what matters in them.

`console.log` and `mqtt.jsonl` are written from the same host clock by different threads; read
back and merged by time, they tell in one column what the device printed and what went over
the broker. Their times carry no zone (host local time): the run's zone is attached, so they
compare with run.json's `started`/`ended`. The OTA transfers in the MQTT records are taken
apart here too, for the report's progress and retransmission plots.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path

from hil.protocol import ota

CONSOLE = "console.log"
MQTT = "mqtt.jsonl"
SHOWN_PAYLOAD = 160  # characters of a payload shown in a row; the rest is counted

# Device lines that explain a failure: crashes and resets, lost network, refusals. Generic
# on purpose: the report does not know which profile a rig overrode.
_BAD = re.compile(
    r"Guru Meditation|panic|abort\(\)|Backtrace:|Brownout|assert|Network lost|"
    r"OTA failed|OTA:ERROR|Decrypt failed|\berror\b|\bfail(ed|ure)?\b|timed? ?out|"
    r"\brst:0x",
    re.IGNORECASE,
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class Event:
    """A console line or an MQTT message, at its time."""

    time: datetime
    source: str  # "console" or "mqtt"
    text: str  # printable: the line, or the payload as shown
    topic: str = ""
    direction: str = ""  # "in" (to the harness, from the device) or "out" (from the harness)
    harness: bool = False  # a console line hil wrote itself ("[hil] ...")
    bad: bool = False  # a line that explains a failure: highlighted
    chunk: int | None = None  # the number of an OTA chunk the harness sent


def printable(text: str) -> str:
    """Device text without terminal colour codes, other control bytes shown as `\\xNN`."""
    text = _ANSI.sub("", text)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def is_bad(text: str) -> bool:
    return bool(_BAD.search(text))


def parse_time(text: str, zone: tzinfo) -> datetime:
    """An ISO time; one written without a zone is taken to be in `zone` (the run's)."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def read_console(path: Path, zone: tzinfo) -> list[Event]:
    """`ISO-time text` lines; a line without a time takes the time of the one before it."""
    events: list[Event] = []
    orphans: list[str] = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stamp, _, text = raw.partition(" ")
        try:
            moment = parse_time(stamp, zone)
        except ValueError:
            if events:
                moment, text = events[-1].time, raw
            else:
                orphans.append(raw)
                continue
        for orphan in orphans:  # lines before the first stamped one: keep them, at its time
            events.append(_console(moment, orphan))
        orphans.clear()
        events.append(_console(moment, text))
    return events


def _console(moment: datetime, text: str) -> Event:
    text = printable(text)
    harness = text.startswith("[hil] ")
    return Event(moment, "console", text, harness=harness, bad=not harness and is_bad(text))


def read_mqtt(path: Path, zone: tzinfo) -> list[Event]:
    """One JSON record per line; a line that is not one is skipped (a run cut mid-write).

    The harness's OTA chunks are shown by their number: on a topic that carried an
    `OTA:BEGIN` from the harness, the payloads that decode as chunks.
    """
    records = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(raw)
            records.append((parse_time(record["time"], zone), record))
        except (ValueError, KeyError, TypeError):
            continue
    firmware = {
        r.get("topic")
        for _, r in records
        if r.get("dir") == "out" and str(r.get("payload", "")).startswith("OTA:BEGIN:")
    }
    events = []
    for moment, record in records:
        direction = str(record.get("dir", ""))
        topic = printable(str(record.get("topic", "")))
        chunk = _chunk(record) if direction == "out" and record.get("topic") in firmware else None
        if chunk is not None:
            number, size = chunk
            text = f"chunk {number} ({size} data bytes)"
            events.append(Event(moment, "mqtt", text, topic, direction, chunk=number))
            continue
        text = _payload_text(record)
        bad = direction == "in" and is_bad(text)
        events.append(Event(moment, "mqtt", text, topic, direction, bad=bad))
    return events


def _chunk(record: dict) -> tuple[int, int] | None:
    """(number, data bytes) of an OTA chunk payload, or None when it is not one."""
    payload = str(record.get("payload", ""))
    if record.get("encoding") == "base64" or payload.startswith("OTA:"):
        return None
    try:
        number, data = ota.decode_chunk(payload, data_size=len(payload))
    except ota.ChunkError:
        return None
    return number, len(data)


def _payload_text(record: dict) -> str:
    payload = str(record.get("payload", ""))
    if record.get("encoding") == "base64":
        try:
            data = base64.b64decode(payload)
        except (binascii.Error, ValueError):
            data = b""
        text = f"<{len(data)} bytes: {data[:16].hex(' ')}{' …' if len(data) > 16 else ''}>"
    else:
        text = printable(payload)
        if len(text) > SHOWN_PAYLOAD:
            text = f"{text[:SHOWN_PAYLOAD]}… ({len(text)} characters)"
    size = record.get("size")
    if isinstance(size, int):
        text += f" (recorded in part: {size} bytes were sent)"
    return text


def load(folder: Path, zone: tzinfo) -> list[Event]:
    """A test folder's console and MQTT records merged by time (console first at a tie)."""
    console = read_console(folder / CONSOLE, zone) if (folder / CONSOLE).is_file() else []
    mqtt = read_mqtt(folder / MQTT, zone) if (folder / MQTT).is_file() else []
    return sorted(console + mqtt, key=lambda e: (e.time, e.source != "console"))


def last_before(events: list[Event], end: datetime, count: int = 20) -> list[Event]:
    """The `count` events up to `end`: where to look first when a test failed at its end."""
    shown = [e for e in events if e.time <= end]
    return shown[-count:]


@dataclass
class OtaTransfer:
    """One update as the broker saw it: from the harness's `OTA:BEGIN` to the device's verdict.

    Series are (seconds since BEGIN, value): the highest chunk the device said it wrote, each
    chunk the harness sent (and those it had sent before), the chunks the device asked for.
    """

    begin: datetime
    total: int | None = None
    written: list[tuple[float, int]] = field(default_factory=list)
    sent: list[tuple[float, int]] = field(default_factory=list)
    resent: list[tuple[float, int]] = field(default_factory=list)
    requested: list[tuple[float, int]] = field(default_factory=list)
    outcome: str = "unfinished"

    @property
    def resent_so_far(self) -> list[tuple[float, int]]:
        """The running count of chunks sent again, a step at each."""
        return [(0.0, 0)] + [(t, n + 1) for n, (t, _) in enumerate(self.resent)]

    @property
    def seconds(self) -> float:
        times = [t for series in (self.written, self.sent, self.requested) for t, _ in series]
        return max(times, default=0.0)


def ota_transfers(events: list[Event]) -> list[OtaTransfer]:
    """The OTA updates in a test's merged records, in order."""
    transfers: list[OtaTransfer] = []
    current: OtaTransfer | None = None
    seen: set[int] = set()
    for event in events:
        if event.source != "mqtt":
            continue
        if event.direction == "out" and event.text.startswith("OTA:BEGIN:"):
            current = OtaTransfer(begin=event.time)
            transfers.append(current)
            seen = set()
            continue
        if current is None or current.outcome != "unfinished":
            continue
        at = (event.time - current.begin).total_seconds()
        if event.chunk is not None:
            (current.resent if event.chunk in seen else current.sent).append((at, event.chunk))
            seen.add(event.chunk)
        elif event.direction == "in":
            reply = ota.parse_reply(event.text)
            if isinstance(reply, ota.Progress):
                current.total = reply.total
                current.written.append((at, reply.number))
            elif isinstance(reply, ota.Request):
                current.requested.append((at, reply.number))
            elif isinstance(reply, ota.Success):
                current.outcome = "success"
            elif isinstance(reply, ota.Error):
                current.outcome = f"refused: {reply.reason}"
    return transfers

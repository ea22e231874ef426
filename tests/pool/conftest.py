"""Pools of rigs written for a test: small rig files for resolving and claiming, and virtual
rigs made from rigs/sim.toml (differing in name only) for real runs. Every test takes its rig
locks in its own folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIM_RIG = ROOT / "rigs" / "sim.toml"


def plain_rig(name: str) -> str:
    """A valid rig file whose console is nowhere: a session on it fails within a second."""
    return (
        f'[rig]\nname = "{name}"\n'
        '[console]\ndriver = "serial"\nport = "/dev/hil-test-no-such-console"\nreappear_s = 0.5\n'
        '[broker]\ndriver = "embedded"\n'
    )


def virtual_rig(name: str, **replace: str) -> str:
    """rigs/sim.toml named `name`, with a fresh twin flash each run, and `replace` (old line to
    new line) applied."""
    lines = []
    for line in SIM_RIG.read_text().splitlines():
        if line.startswith("flash ="):
            continue
        if line == 'name = "virtual"':
            line = f'name = "{name}"'
        lines.append(replace.get(line, line))
    return "\n".join(lines) + "\n"


@pytest.fixture(autouse=True)
def locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "locks"
    folder.mkdir()
    monkeypatch.setenv("HIL_LOCK_DIR", str(folder))
    yield folder

"""`--rig` values as a pool: files and folders, in order, each file once; a bad file named."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.pool import folder_name, load_pool, rig_files
from hil.schema import ConfigError
from tests.pool.conftest import plain_rig

pytest_plugins = ["pytester"]


@pytest.fixture
def benches(tmp_path: Path) -> Path:
    folder = tmp_path / "benches"
    folder.mkdir()
    for name in ("b", "a", "c"):
        (folder / f"bench-{name}.toml").write_text(plain_rig(f"bench {name}"))
    (folder / "notes.md").write_text("not a rig\n")
    return folder


def test_a_folder_is_its_toml_files_by_name_and_a_file_named_twice_counts_once(
    benches, tmp_path
) -> None:
    single = tmp_path / "single.toml"
    single.write_text(plain_rig("single"))

    files = rig_files(["single.toml", "benches", "benches/bench-a.toml", single], tmp_path)

    assert files == [
        single,
        benches / "bench-a.toml",
        benches / "bench-b.toml",
        benches / "bench-c.toml",
    ]
    assert [r.name for r in load_pool(["benches"], tmp_path)] == ["bench a", "bench b", "bench c"]
    assert folder_name("bench a") == "bench_a"


def test_an_empty_folder_is_refused_naming_it(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"empty: a rig folder, but it holds no \*\.toml"):
        rig_files(["empty"], tmp_path)


def test_two_rigs_of_one_name_are_refused_naming_both_files(benches) -> None:
    (benches / "bench-d.toml").write_text(plain_rig("bench a"))
    with pytest.raises(ConfigError) as refused:
        load_pool([benches], benches)
    message = str(refused.value)
    assert str(benches / "bench-d.toml") in message and str(benches / "bench-a.toml") in message
    assert "each rig of a pool needs a name of its own" in message


def test_a_bad_file_in_the_pool_stops_the_run_naming_it(benches, pytester) -> None:
    bad = benches / "bench-b.toml"
    bad.write_text(plain_rig("bench b").replace('driver = "serial"', 'driver = "serail"'))
    pytester.makepyfile(test_x="import pytest\n\n@pytest.mark.hil\ndef test_x():\n    pass\n")

    result = pytester.runpytest("--rig", str(benches / "bench-a.toml"), "--rig", str(benches))

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if "bad rig file" in line]
    assert errors and f"hil: bad rig file: {bad}: [console.driver]" in errors[0], result.errlines
    assert not (pytester.path / "hil-artifacts").exists()


def test_a_path_that_is_neither_file_nor_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"benhces\.toml.*no such rig file or folder"):
        rig_files(["benhces.toml"], tmp_path)

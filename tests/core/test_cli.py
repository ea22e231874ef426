"""The hil command line: run's test selection, --version, crypto against openssl, rigs check."""

from importlib.metadata import version
from pathlib import Path

import pytest

from hil import cli

from .conftest import openssl_encrypt

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("extra", "suites_added"),
    [
        ([], True),
        (["-q", "-p", "no:cacheprovider", "-k", "echo"], True),
        (["test_suites/test_echo.py::test_status_led_toggles_on_every_message"], False),
        (["tests/core"], False),
    ],
)
def test_run_adds_the_suites_unless_a_path_is_named(monkeypatch, extra, suites_added) -> None:
    monkeypatch.chdir(ROOT)
    seen: list[list[str]] = []
    monkeypatch.setattr("pytest.main", lambda args, plugins=None: seen.append(args) or 0)
    assert cli.main(["run", "--rig", "rigs/sim.toml", *extra]) == 0
    assert any(Path(a).name == "test_suites" for a in seen[0]) is suites_added
    assert seen[0][:2] == ["--rig", "rigs/sim.toml"]


def test_version_is_the_installed_one(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"hil {version('hil')}\n"


def test_crypto_encrypt_matches_openssl(capsys) -> None:
    assert cli.main(["crypto", "encrypt", "Test Message"]) == 0
    assert capsys.readouterr().out.strip() == openssl_encrypt(b"Test Message")


def test_crypto_decrypt_refuses_bad_input(capsys) -> None:
    assert cli.main(["crypto", "decrypt", "not base64!"]) == 1
    assert "cannot decrypt" in capsys.readouterr().err


def test_rigs_check_reports_what_it_found(capsys) -> None:
    # Its boards are not plugged in here: the file is fine, the rig is not fit for a run.
    assert cli.main(["rigs", "check", str(ROOT / "rigs/bench-esp32s3-sim7600.toml")]) == 1
    out = capsys.readouterr().out
    assert "lcus (normally closed)" in out and "rig file OK" in out
    assert "NOT PRESENT now" in out


def test_rigs_check_names_the_bad_key(tmp_path, capsys) -> None:
    bad = tmp_path / "r.toml"
    bad.write_text('[console]\ndriver = "serial"\nport = "/dev/x"\n[broker]\ndriver = "nope"\n')
    assert cli.main(["rigs", "check", str(bad)]) == 1
    assert "[broker.driver] unknown broker driver 'nope'" in capsys.readouterr().err

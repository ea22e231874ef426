"""The rig lock in a folder other users may write in: no link is followed, no folder trusted
blindly, and a lock file one user made stays usable by the next."""

from __future__ import annotations

import errno
import json
import logging
import os
import pwd
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import hil.lock
from hil.lock import RigBusy, RigLock, lock_dir

OTHER_UID = 4242
as_root = pytest.mark.skipif(os.getuid() != 0, reason="only root can give a file to another user")


@pytest.fixture
def rig(tmp_path: Path) -> Path:
    return tmp_path / "bench.toml"


@pytest.fixture
def locks(tmp_path: Path) -> Path:
    folder = tmp_path / "locks"
    folder.mkdir()
    return folder


@pytest.fixture
def umask() -> Iterator[None]:
    """A umask that would take every permission but the owner's."""
    old = os.umask(0o077)
    yield
    os.umask(old)


def test_a_link_planted_at_the_note_is_replaced_never_written_through(rig, locks) -> None:
    victim = locks.parent / "victim"
    victim.write_text("precious\n")
    lock = RigLock(rig, "bench", locks)
    lock.note_path.symlink_to(victim)

    with lock:
        assert victim.read_text() == "precious\n"
        assert not lock.note_path.is_symlink()
        assert json.loads(lock.note_path.read_text())["pid"] == os.getpid()
        assert stat.S_IMODE(lock.note_path.stat().st_mode) == 0o644
    assert victim.read_text() == "precious\n"
    assert not lock.note_path.exists()


@pytest.mark.parametrize("target", ["victim", "created-elsewhere"])
def test_a_link_planted_at_the_lock_is_refused_and_never_followed(rig, locks, target) -> None:
    victim = locks.parent / target
    if target == "victim":
        victim.write_text("precious\n")
    lock = RigLock(rig, "bench", locks)
    lock.path.symlink_to(victim)

    with pytest.raises(RigBusy) as refused:
        lock.acquire()

    message = str(refused.value)
    assert f"lock file {lock.path} is a symbolic link" in message
    assert "remove it" in message and "HIL_LOCK_DIR" in message
    if target == "victim":
        assert victim.read_text() == "precious\n"
    else:
        assert not victim.exists()
    assert not lock.note_path.exists()


def test_a_world_writable_folder_without_the_sticky_bit_is_refused(rig, locks) -> None:
    locks.chmod(0o777)

    with pytest.raises(RigBusy) as refused:
        RigLock(rig, "bench", locks).acquire()

    message = str(refused.value)
    assert f"lock folder {locks} is writable by every user without the sticky bit" in message
    assert f"chmod +t {locks}" in message and "set HIL_LOCK_DIR to a folder you own" in message
    assert list(locks.iterdir()) == []


def test_a_sticky_world_writable_folder_is_shared(rig, locks) -> None:
    locks.chmod(0o1777)
    with RigLock(rig, "bench", locks) as lock:
        assert lock.note_path.exists()


@as_root
@pytest.mark.parametrize("planted", ["folder", "link to a folder"])
def test_a_folder_of_another_user_is_refused(rig, locks, planted) -> None:
    if planted == "folder":
        folder = locks
        os.chown(folder, OTHER_UID, -1)
    else:
        folder = locks.parent / "link"
        folder.symlink_to(locks)
        os.lchown(folder, OTHER_UID, -1)

    with pytest.raises(RigBusy) as refused:
        RigLock(rig, "bench", folder).acquire()

    message = str(refused.value)
    assert f"lock folder {folder} belongs to uid {OTHER_UID}, not to root or you" in message
    assert "set HIL_LOCK_DIR to a folder you own" in message
    assert list(locks.iterdir()) == []


@pytest.mark.usefixtures("umask")
def test_lock_files_are_usable_by_every_user_whatever_the_umask(rig, locks) -> None:
    with RigLock(rig, "bench", locks) as lock:
        assert stat.S_IMODE(lock.path.stat().st_mode) == 0o666


def test_a_lock_file_an_older_run_made_private_is_opened_up(rig, locks) -> None:
    lock = RigLock(rig, "bench", locks)
    lock.path.touch(mode=0o644)
    lock.path.chmod(0o644)
    with lock:
        assert stat.S_IMODE(lock.path.stat().st_mode) == 0o666


def test_a_lock_file_we_may_not_open_gives_one_clear_error(rig, locks, monkeypatch) -> None:
    """Another user's private lock file, as root cannot meet one: `os.open` says no."""
    lock = RigLock(rig, "bench", locks)
    lock.path.touch(mode=0o644)
    owner = pwd.getpwuid(lock.path.stat().st_uid).pw_name
    real_open = os.open

    def open_(path, flags, mode=0o777, **kwargs):
        if os.fspath(path) == str(lock.path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    with pytest.raises(RigBusy) as refused:
        lock.acquire()

    message = str(refused.value)
    assert f"rig bench ({rig.resolve()}): lock file {lock.path} belongs to {owner}" in message
    assert f"chmod 666 {lock.path}" in message and "set HIL_LOCK_DIR" in message


def test_the_holder_is_named_even_when_its_note_cannot_be_written(
    rig, locks, monkeypatch, caplog
) -> None:
    """A stale note another user left in a sticky folder cannot be replaced; it must not lie."""
    first = RigLock(rig, "bench", locks)
    stale = '{"rig": "x", "pid": 999999999, "since": "then", "user": "bob", "command": "hil"}\n'
    first.note_path.write_text(stale)

    def replace(src, dst):
        raise PermissionError(errno.EPERM, "Operation not permitted", dst)

    monkeypatch.setattr(os, "replace", replace)
    with caplog.at_level(logging.WARNING, "hil.lock"), first:
        assert f"no note {first.note_path}" in caplog.text
        assert first.note_path.read_text() == stale
        assert [p.name for p in locks.iterdir() if p.name.startswith(".")] == []
        with pytest.raises(RigBusy) as busy:
            RigLock(rig, "bench", locks).acquire()
    assert f"is in use by pid {os.getpid()} since" in str(busy.value)
    assert "has exited" not in str(busy.value)


def test_a_sigkilled_holder_leaves_no_lock_behind(rig, locks) -> None:
    hold = (
        "import sys; from pathlib import Path; from hil.lock import RigLock\n"
        f"lock = RigLock(Path({str(rig)!r}), 'bench', Path({str(locks)!r}))\n"
        "lock.acquire(); print('held', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RigBusy, match=f"in use by pid {holder.pid} since"):
            RigLock(rig, "bench", locks).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RigLock(rig, "bench", locks):
        pass


def test_the_shared_folder_is_the_last_choice_and_made_sticky(
    rig, tmp_path, monkeypatch, umask
) -> None:
    shared = tmp_path / "hil-locks"
    monkeypatch.setattr(hil.lock, "SHARED_DIR", shared)
    monkeypatch.setenv("HIL_LOCK_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert lock_dir() == tmp_path / "mine"
    monkeypatch.delenv("HIL_LOCK_DIR")
    assert lock_dir() == tmp_path / "run" / "hil"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert lock_dir() == shared

    with RigLock(rig, "bench"):
        assert stat.S_IMODE(shared.stat().st_mode) == 0o1777

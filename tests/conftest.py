"""What every test of the project shares when run in parallel (`pytest -n N --dist loadgroup`).

Each pytest-xdist worker gets a rig-lock folder of its own, so two workers' copies of a
virtual rig (same name, different twins) never wait on each other's lock. The repository's
own `rigs/sim.toml` is one board, though: one rig lock and one flash file
(`.state/sim-flash.bin`) that a single twin may hold. Modules that run it directly are marked
`repo_rig` and all go to one worker, in turn, as they would on a bench.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "repo_rig: starts a twin from the repository's own rigs/sim.toml "
        "(one board: these tests run on one xdist worker, in turn)",
    )


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("repo_rig"):
            item.add_marker(pytest.mark.xdist_group("repo-rig"))


@pytest.fixture(scope="session", autouse=True)
def worker_lock_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A rig-lock folder per worker, unless the environment names one."""
    if "PYTEST_XDIST_WORKER" in os.environ and "HIL_LOCK_DIR" not in os.environ:
        os.environ["HIL_LOCK_DIR"] = str(tmp_path_factory.mktemp("locks"))

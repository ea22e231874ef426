"""Sessions: tests (the harness's own), sim (the HIL suites on the virtual rig), lint, bench."""

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "venv"


@nox.session
def tests(session: nox.Session) -> None:
    """The harness's own tests: unit, twin and suites-against-twin."""
    session.install("-e", ".[dev]")
    session.run("pytest", *(session.posargs or ["-n", "3", "--dist", "loadgroup"]))


@nox.session
def sim(session: nox.Session) -> None:
    """The HIL suites against the virtual rig, as lab CI runs them against hardware."""
    session.install("-e", ".[dev]")
    session.run("hil", "run", "--rig", "rigs/sim.toml", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def bench(session: nox.Session) -> None:
    """OTA throughput on the twin against the UART's ceiling (a measurement, not a test)."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "hil.bench", *session.posargs)

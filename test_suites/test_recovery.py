"""Network recovery (PROTOCOL.md state machine, seed scenario 3): the rig cuts the modem's power.

The device must notice (`Network lost`), walk the recovery states in order, come back with
`STATUS:ONLINE` within the lab limit after power returns, however long it was cut, and then
answer an echo (so it really resubscribed).
"""

import re

import pytest

pytestmark = [
    pytest.mark.hil,
    pytest.mark.needs("power"),
    pytest.mark.asyncio(loop_scope="session"),
]

# Cut lengths in units of the firmware's retry budget (MAX_RETRIES x RETRY_DELAY).
DURATIONS = {"short": 0.3, "medium": 1.0, "longer_than_retry_budget": 2.5}
# Merge CI cuts once, briefly (-m smoke); a cut that outlasts the retry budget is slow.
CUT_MARKS = {"short": pytest.mark.smoke, "longer_than_retry_budget": pytest.mark.slow}


def transitions(dut, since: int) -> list[str]:
    """The states the device entered since console line `since`, in order."""
    state = re.compile(dut.profile.console.state)
    found = (state.search(line.text) for line in dut.console.since(since))
    return [m["dst"] for m in found if m]


def assert_recovery_path(dut, since: int) -> None:
    """After the last entry into the first recovery state, the rest follow in order."""
    path = dut.profile.firmware.recovery_path
    entered = transitions(dut, since)
    assert path[0] in entered, f"never entered {path[0]}; states were {entered}"
    last = len(entered) - 1 - entered[::-1].index(path[0])
    tail = iter(entered[last:])
    missing = [state for state in path if state not in tail]
    assert not missing, f"recovery skipped {missing}; states after {path[0]}: {entered[last:]}"


async def cut_and_recover(dut, measurements, seconds: float, label: str = "") -> None:
    since_mqtt, since_console = dut.mqtt.mark(), dut.console.mark()

    cut = await dut.power_cut(seconds)

    lost = await dut.console.expect(
        dut.profile.console.network_lost, dut.limits.detect_s, since=since_console
    )
    await dut.wait_online(dut.limits.recovery_s, since=since_mqtt)
    online_at = dut.mqtt.records[dut.mqtt.cursor - 1].time
    measurements.record(f"detection{label}", lost.time - cut.off_at, "s", high=dut.limits.detect_s)
    recovery = measurements.record(
        f"recovery{label}", online_at - cut.on_at, "s", high=dut.limits.recovery_s
    )
    assert_recovery_path(dut, since_console)
    assert recovery.passed, str(recovery)
    reply = await dut.echo(f"back after {seconds:.2f} s off")
    assert reply.first.text == f"back after {seconds:.2f} s off", "subscriptions must be restored"


@pytest.mark.parametrize(
    "budgets",
    [
        pytest.param(budgets, id=name, marks=CUT_MARKS.get(name, ()))
        for name, budgets in DURATIONS.items()
    ],
)
async def test_recovers_after_power_cut(dut, measurements, budgets: float) -> None:
    await dut.current_version()
    await cut_and_recover(dut, measurements, budgets * dut.profile.firmware.retry_budget_s)


@pytest.mark.slow
async def test_recovers_after_three_cuts_in_a_row(dut, measurements) -> None:
    await dut.current_version()
    for n in range(3):
        await cut_and_recover(
            dut,
            measurements,
            DURATIONS["medium"] * dut.profile.firmware.retry_budget_s,
            f"_{n + 1}",
        )


async def test_recovers_from_cut_during_registration(dut, measurements) -> None:
    """Cut again while the device is re-registering after a first cut."""
    await dut.current_version()
    budget = dut.profile.firmware.retry_budget_s
    since_mqtt, since_console = dut.mqtt.mark(), dut.console.mark()
    await dut.power_cut(DURATIONS["short"] * budget)
    registering = dut.profile.firmware.recovery_path[1]
    await dut.console.expect(
        rf"-> {re.escape(registering)}\b", dut.limits.recovery_s, since=since_console
    )
    # Only an ONLINE after the second cut counts: one sent before it took effect proves nothing.
    since_mqtt = dut.mqtt.mark()
    cut = await dut.power_cut(DURATIONS["medium"] * budget)
    await dut.wait_online(dut.limits.recovery_s, since=since_mqtt)
    online_at = dut.mqtt.records[dut.mqtt.cursor - 1].time
    measurements.check("recovery", online_at - cut.on_at, "s", high=dut.limits.recovery_s)
    reply = await dut.echo("registered again")
    assert reply.first.text == "registered again"

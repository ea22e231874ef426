"""FaultPlan: named plans fit any image, and apply to first transmissions only."""

from __future__ import annotations

import pytest

from hil.ota import FaultPlan


@pytest.mark.parametrize("total", [1, 2, 3, 7, 40, 3871])
@pytest.mark.parametrize("name", FaultPlan.NAMES)
def test_named_plans_fit_any_image(name: str, total: int) -> None:
    plan = FaultPlan.named(name, total, seed=3)
    assert plan.name == name
    plan.check(total)


def test_named_positions() -> None:
    assert FaultPlan.named("drop_first", 40).drop == {0}
    assert FaultPlan.named("drop_middle", 40).drop == {20}
    assert FaultPlan.named("drop_last", 40).drop == {39}
    assert FaultPlan.named("drop_burst_5", 40).drop == set(range(13, 18))
    assert FaultPlan.named("drop_burst_5", 3).drop == {0, 1, 2}
    assert FaultPlan.named("duplicate", 40).duplicate == {0, 20, 39}
    assert FaultPlan.named("reorder", 40).reorder == {0, 20}
    assert FaultPlan.named("reorder", 1).reorder == frozenset()
    assert FaultPlan.named("corrupt_byte", 40).corrupt == {20}
    assert FaultPlan.named("truncate", 40).chunk_limit(40) == 39
    assert FaultPlan.named("none", 40) == FaultPlan()


def test_random_drops_are_a_seeded_fraction() -> None:
    plan = FaultPlan.named("drop_random_10pct", 200, seed=11)
    assert len(plan.drop) == 20
    assert plan == FaultPlan.named("drop_random_10pct", 200, seed=11)
    assert plan != FaultPlan.named("drop_random_10pct", 200, seed=12)
    assert len(FaultPlan.named("drop_random_10pct", 3).drop) == 1


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="no fault plan 'drop_all'; known: none, drop_first"):
        FaultPlan.named("drop_all", 10)


def test_plan_beyond_the_image_is_refused() -> None:
    with pytest.raises(ValueError, match=r"drop names chunks \[12\], the image has chunks 0..9"):
        FaultPlan.dropping({3, 12}).check(10)
    with pytest.raises(ValueError, match="reorder"):
        FaultPlan(reorder=frozenset({9})).check(10)


def test_first_emission() -> None:
    plan = FaultPlan(drop=frozenset({1}), duplicate=frozenset({2}), reorder=frozenset({4}))
    assert plan.first_emission(0, 10) == (1, (0,))
    assert plan.first_emission(1, 10) == (2, (2, 2))  # a dropped chunk goes out as the next
    assert plan.first_emission(2, 10) == (1, (2, 2))
    assert plan.first_emission(4, 10) == (2, (5, 4))
    assert plan.first_emission(4, 5) == (1, (4,))  # no successor before the limit


def test_corruption_flips_one_byte_every_time() -> None:
    plan = FaultPlan.named("corrupt_byte", 3)
    data = bytes(range(100))
    bad = plan.data(1, data)
    assert bad == plan.data(1, data)
    assert sum(a != b for a, b in zip(bad, data, strict=True)) == 1
    assert plan.data(0, data) == data


def test_a_dropped_run_goes_out_as_the_chunk_after_it() -> None:
    """The device sees the gap however few chunks the sender keeps in flight."""
    burst = FaultPlan.dropping_burst(5, 3, 20)
    assert burst.first_emission(3, 20) == (6, (8,))
    assert FaultPlan(drop=frozenset({3}), reorder=frozenset({4})).first_emission(3, 20) == (
        3,
        (5, 4),
    )
    assert FaultPlan.dropping({8, 9}).first_emission(8, 10) == (2, ())  # nothing after it
    assert FaultPlan.dropping({9}).first_emission(9, 10) == (1, ())

"""Measurements: a named value with its unit and limits, judged where it is taken.

Suites record latencies, throughputs and recovery times here; each lands in the test's
`measurements.json` and as a JUnit property, so CI dashboards can trend them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Measurement:
    name: str
    value: float
    unit: str
    low: float | None = None
    high: float | None = None

    @property
    def passed(self) -> bool:
        return (self.low is None or self.value >= self.low) and (
            self.high is None or self.value <= self.high
        )

    def __str__(self) -> str:
        limits = []
        if self.low is not None:
            limits.append(f">= {self.low:g}")
        if self.high is not None:
            limits.append(f"<= {self.high:g}")
        bound = f" (limit {' and '.join(limits)} {self.unit})" if limits else ""
        verdict = "" if self.passed else " OUT OF LIMITS"
        return f"{self.name} = {self.value:.4g} {self.unit}{bound}{verdict}"


class Measurements:
    """The measurements of one test."""

    def __init__(self) -> None:
        self.items: list[Measurement] = []

    def record(
        self,
        name: str,
        value: float,
        unit: str,
        *,
        low: float | None = None,
        high: float | None = None,
    ) -> Measurement:
        """Record a value; the test decides what an out-of-limits value means."""
        measurement = Measurement(name, float(value), unit, low, high)
        self.items.append(measurement)
        return measurement

    def check(self, name: str, value: float, unit: str, *, low=None, high=None) -> Measurement:
        """Record a value and fail the test when it is outside its limits."""
        measurement = self.record(name, value, unit, low=low, high=high)
        assert measurement.passed, str(measurement)
        return measurement

    def to_json(self) -> str:
        return json.dumps([asdict(m) | {"passed": m.passed} for m in self.items], indent=2)

    def properties(self) -> list[tuple[str, str]]:
        """(name, value) pairs for JUnit XML."""
        return [(f"{m.name}[{m.unit}]", f"{m.value:.6g}") for m in self.items]

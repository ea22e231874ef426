"""Fault plans: what the OTA sender does wrong on purpose, to prove the device copes.

Drops, duplicates and reorders touch only a chunk's first transmission: the retransmission
that follows `OTA:REQUEST` or a timeout goes through, otherwise a dropped chunk could never
arrive. A dropped chunk is followed on the wire by the next one, whatever the window, so the
device sees the gap and asks for it. Corruption is sticky (the file itself is wrong), so the
device must refuse the image at `OTA:END` with `verify`. Truncation sends `OTA:END` before the
last chunk."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FaultPlan:
    """Chunk numbers to misdeliver; `name` is the id suites show in parametrized test names."""

    name: str = "none"
    drop: frozenset[int] = field(default_factory=frozenset)
    duplicate: frozenset[int] = field(default_factory=frozenset)
    reorder: frozenset[int] = field(default_factory=frozenset)  # k: k+1 goes out before k
    corrupt: frozenset[int] = field(default_factory=frozenset)
    truncate: bool = False

    NAMES = (
        "none",
        "drop_first",
        "drop_middle",
        "drop_last",
        "drop_random_10pct",
        "drop_burst_5",
        "duplicate",
        "reorder",
        "corrupt_byte",
        "truncate",
    )

    @classmethod
    def named(cls, name: str, total_chunks: int, seed: int = 0) -> FaultPlan:
        """The plan called `name`, with positions chosen to fit an image of `total_chunks`."""
        if total_chunks < 1:
            raise ValueError(f"an image has at least one chunk, not {total_chunks}")
        last, middle = total_chunks - 1, total_chunks // 2
        builders: dict[str, Callable[[], FaultPlan]] = {
            "none": cls,
            "drop_first": lambda: cls.dropping({0}, name),
            "drop_middle": lambda: cls.dropping({middle}, name),
            "drop_last": lambda: cls.dropping({last}, name),
            "drop_random_10pct": lambda: cls.dropping_fraction(0.1, total_chunks, seed, name),
            "drop_burst_5": lambda: cls.dropping_burst(5, total_chunks // 3, total_chunks, name),
            "duplicate": lambda: cls(name, duplicate=frozenset({0, middle, last})),
            "reorder": lambda: cls(name, reorder=_pairs({0, middle}, total_chunks)),
            "corrupt_byte": lambda: cls(name, corrupt=frozenset({middle})),
            "truncate": lambda: cls(name, truncate=True),
        }
        if name not in builders:
            raise ValueError(f"no fault plan {name!r}; known: {', '.join(cls.NAMES)}")
        return builders[name]()

    @classmethod
    def dropping(cls, numbers: Iterable[int], name: str = "drop") -> FaultPlan:
        return cls(name, drop=frozenset(numbers))

    @classmethod
    def dropping_fraction(
        cls, fraction: float, total_chunks: int, seed: int = 0, name: str = "drop_random"
    ) -> FaultPlan:
        """Drop a seeded random `fraction` of the chunks (at least one), reproducible by seed."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], not {fraction}")
        count = max(1, round(total_chunks * fraction))
        return cls(name, drop=frozenset(random.Random(seed).sample(range(total_chunks), count)))

    @classmethod
    def dropping_burst(
        cls, length: int, start: int, total_chunks: int, name: str = "drop_burst"
    ) -> FaultPlan:
        """Drop `length` consecutive chunks from `start`, moved back so the burst fits."""
        length = min(length, total_chunks)
        start = max(0, min(start, total_chunks - length))
        return cls(name, drop=frozenset(range(start, start + length)))

    def check(self, total_chunks: int) -> None:
        """Refuse a plan naming chunks the image does not have: it would silently test nothing."""
        for what, numbers in (
            ("drop", self.drop),
            ("duplicate", self.duplicate),
            ("corrupt", self.corrupt),
            ("reorder", {k + 1 for k in self.reorder}),
        ):
            beyond = sorted(n for n in numbers if not 0 <= n < total_chunks)
            if beyond:
                raise ValueError(
                    f"fault plan {self.name!r}: {what} names chunks {beyond}, "
                    f"the image has chunks 0..{total_chunks - 1}"
                )

    def chunk_limit(self, total_chunks: int) -> int:
        """How many chunks go out before `OTA:END`."""
        return total_chunks - 1 if self.truncate else total_chunks

    def first_emission(self, number: int, limit: int) -> tuple[int, tuple[int, ...]]:
        """For the first transmission of `number`: (chunks it consumes, numbers put on the wire).

        A reordered pair consumes two chunks and sends the later one first. A run of dropped
        chunks is consumed with the first chunk after it, which goes out in their place, so
        the device sees the gap whatever the window: with fewer chunks in flight than the run
        is long, the window would otherwise hold only dropped ones, and the sender would wait
        out its reply timeout with no REQUEST. A run that ends the image leaves no gap to see.
        """
        if number in self.drop:
            after = number
            while after < limit and after in self.drop:
                after += 1
            consumed, wire = self.first_emission(after, limit) if after < limit else (0, ())
            return after - number + consumed, wire
        order = (number + 1, number) if number in self.reorder and number + 1 < limit else (number,)
        wire = tuple(
            n for n in order if n not in self.drop for _ in range(2 if n in self.duplicate else 1)
        )
        return len(order), wire

    def data(self, number: int, data: bytes) -> bytes:
        """The chunk's data as sent, every time: one byte flipped when the chunk is corrupt."""
        if number not in self.corrupt:
            return data
        at = len(data) // 2
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def _pairs(starts: set[int], total_chunks: int) -> frozenset[int]:
    """Reorder starts that have a successor and do not overlap."""
    chosen: set[int] = set()
    for k in sorted(starts):
        if k + 1 < total_chunks and k - 1 not in chosen:
            chosen.add(k)
    return frozenset(chosen)

"""What the proxy does to traffic now: the fault plan, set from any thread, read per packet.

Link-wide faults (a blackhole, a delay on everything, a loss rate of PUBLISHes) hold until
changed; packet faults (drop or delay the next N PUBLISHes on a topic, or PUBACKs) use
themselves up. Refusals answer the next CONNECTs. `clear()` goes back to forwarding everything
as it comes.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass

from hil.proxy.codec import Packet, PacketType, topic_matches

DIRECTIONS = ("up", "down")  # up: device to broker; down: broker to device


@dataclass
class _Rule:
    kind: PacketType
    direction: str
    topic: str | None
    delay_s: float | None  # None: drop
    left: int

    def matches(self, packet: Packet, direction: str) -> bool:
        if packet.type is not self.kind or direction != self.direction or self.left <= 0:
            return False
        return self.topic is None or topic_matches(self.topic, packet.fields["topic"])


@dataclass
class _Loss:
    """A lossy link for PUBLISHes: each one it meets is dropped with probability `rate`."""

    direction: str
    topic: str | None
    rate: float
    draw: random.Random
    acknowledge: bool = False

    def drops(self, packet: Packet, direction: str) -> bool:
        if packet.type is not PacketType.PUBLISH or direction != self.direction:
            return False
        if self.topic is not None and not topic_matches(self.topic, packet.fields["topic"]):
            return False
        return self.draw.random() < self.rate


@dataclass(frozen=True)
class Verdict:
    """For one packet: forward it after `delay_s` more seconds, or drop it (`fault` says why)."""

    drop: bool = False
    delay_s: float = 0.0
    fault: str | None = None
    acknowledge: bool = False  # a dropped QoS 1 PUBLISH: answer its PUBACK to the sender


FORWARD = Verdict()


class ProxyFaults:
    """Thread-safe: tests set faults from their thread while the proxy's loop reads them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blackhole = False
        self._delay_s = 0.0
        self._rules: list[_Rule] = []
        self._losses: list[_Loss] = []
        self._refusals: list[int] = []

    @property
    def blackholed(self) -> bool:
        return self._blackhole

    @property
    def delay_s(self) -> float:
        return self._delay_s

    def blackhole(self, on: bool = True) -> None:
        with self._lock:
            self._blackhole = bool(on)

    def delay(self, seconds: float) -> None:
        _check_seconds(seconds)
        with self._lock:
            self._delay_s = float(seconds)

    def drop_publish(self, topic: str | None = None, direction: str = "up", count: int = 1) -> None:
        self._add(PacketType.PUBLISH, direction, topic, None, count)

    def delay_publish(
        self, seconds: float, topic: str | None = None, direction: str = "up", count: int = 1
    ) -> None:
        _check_seconds(seconds)
        self._add(PacketType.PUBLISH, direction, topic, float(seconds), count)

    def drop_publish_rate(
        self,
        rate: float,
        topic: str | None = None,
        direction: str = "down",
        seed: int | None = None,
        acknowledge: bool = False,
    ) -> None:
        """Drop each PUBLISH going `direction` (on `topic`) with probability `rate`, until
        cleared; the same `seed` drops the same packets of the same traffic. A new rate for a
        topic replaces its old one; rate 0 ends it (with no topic: every loss that way).
        `acknowledge` answers a dropped QoS 1 PUBLISH's PUBACK to its sender."""
        _check_direction(direction)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise ValueError(f"rate {rate!r}: give the share of PUBLISHes to drop, 0 to 1")
        ends_all = not rate and topic is None
        with self._lock:
            self._losses = [
                loss
                for loss in self._losses
                if loss.direction != direction or (loss.topic != topic and not ends_all)
            ]
            if rate:
                self._losses.append(
                    _Loss(direction, topic, float(rate), random.Random(seed), acknowledge)
                )

    def drop_puback(self, direction: str = "up", count: int = 1) -> None:
        self._add(PacketType.PUBACK, direction, None, None, count)

    def delay_puback(self, seconds: float, direction: str = "up", count: int = 1) -> None:
        _check_seconds(seconds)
        self._add(PacketType.PUBACK, direction, None, float(seconds), count)

    def refuse_connects(self, count: int, return_code: int) -> None:
        """Answer the next `count` CONNECTs with CONNACK `return_code` (1-5, or an MQTT 5
        reason code from 0x80) and close them, without asking the broker."""
        _check_count(count)
        if not (1 <= return_code <= 5 or 0x80 <= return_code <= 0xFF):
            raise ValueError(
                f"return_code {return_code} refuses nothing; give 1-5 (MQTT 3.1.1: 5 is not "
                "authorized) or an MQTT 5 reason code 0x80-0xFF"
            )
        with self._lock:
            self._refusals += [return_code] * count

    def clear(self) -> None:
        with self._lock:
            self._blackhole = False
            self._delay_s = 0.0
            self._rules.clear()
            self._losses.clear()
            self._refusals.clear()

    def take_refusal(self) -> int | None:
        """The return code for the CONNECT arriving now, or None to let it through."""
        with self._lock:
            return self._refusals.pop(0) if self._refusals else None

    def verdict(self, packet: Packet, direction: str) -> Verdict:
        """What to do with `packet`, read now going `direction`; a packet rule it meets is used."""
        with self._lock:
            if self._blackhole:
                return Verdict(drop=True, fault="blackhole")
            for rule in self._rules:
                if rule.matches(packet, direction):
                    rule.left -= 1
                    if rule.delay_s is None:
                        return Verdict(drop=True, fault="drop")
                    return Verdict(delay_s=rule.delay_s, fault="delay")
            for loss in self._losses:
                if loss.drops(packet, direction):
                    return Verdict(drop=True, fault="loss", acknowledge=loss.acknowledge)
            return FORWARD

    def _add(
        self,
        kind: PacketType,
        direction: str,
        topic: str | None,
        delay_s: float | None,
        count: int,
    ) -> None:
        _check_direction(direction)
        _check_count(count)
        with self._lock:
            self._rules = [r for r in self._rules if r.left > 0]
            self._rules.append(_Rule(kind, direction, topic, delay_s, count))


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(
            f"direction {direction!r}: give 'up' (device to broker) or 'down' (to the device)"
        )


def _check_count(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count {count!r}: give how many packets, 1 or more")


def _check_seconds(seconds: float) -> None:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{seconds!r} s: give a delay in seconds, 0 or more")

"""RFC 3261 transaction timer values for UDP (§17, Table 4) and the retransmission back-off."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TimerValues:
    """T1/T2/T4 and the timers derived from them, for an unreliable transport."""

    t1: float = 0.5
    """RTT estimate (§17.1.1.1): first retransmission interval."""
    t2: float = 4.0
    """Cap of the retransmission interval for non-INVITE requests and INVITE responses."""
    t4: float = 5.0
    """Maximum time a message stays in the network: Timer I (absorb ACKs) on UDP."""

    @property
    def transaction_timeout(self) -> float:
        """64*T1: Timers B, F, H, J and L, and the wait for the ACK of a 2xx (§13.3.1.4)."""
        return 64 * self.t1

    def backoff(self, interval: float) -> float:
        """The next interval of Timers E and G and of 2xx retransmission: doubled, capped at T2."""
        return min(2 * interval, self.t2)


@dataclass
class Retransmission:
    """One message resent with back-off until stopped (Timers E and G, 2xx to INVITE)."""

    data: bytes
    """The exact bytes to resend: retransmissions are byte-identical."""
    addr: tuple[str, int]
    """Where to send them."""
    next_at: float
    """When to resend next."""
    interval: float
    """The interval that produced ``next_at``."""

    def fire(self, now: float, timers: TimerValues) -> None:
        """Record one resend at ``now`` and schedule the next one."""
        self.interval = timers.backoff(self.interval)
        self.next_at = now + self.interval

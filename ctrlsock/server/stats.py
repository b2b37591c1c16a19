"""Counters for ``status-get``."""

from __future__ import annotations

__all__ = ["ServerStats"]


class ServerStats:
    """Counters for ``status-get``. Written only by the engine's thread; read from anywhere."""

    __slots__ = ("accepted", "dropped", "open", "running", "served", "waiting")

    def __init__(self) -> None:
        self.accepted = 0
        self.served = 0
        self.dropped = 0
        self.open = 0
        self.running = 0  # user handlers running (a hung one counts until it returns)
        self.waiting = 0  # commands queued behind them

    def as_dict(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "served": self.served,
            "dropped": self.dropped,
            "open": self.open,
            "running": self.running,
            "waiting": self.waiting,
        }

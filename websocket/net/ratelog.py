"""Warnings anybody can cause in bulk: one line per kind per interval, and a count.

Some warnings are one line per connection: plain HTTP sent to the TLS port, a TLS handshake
that fails or times out, a TLS error, a refused request, a protocol error. Whoever can open
connections can have them written as fast as connections open (3,000 lines in under a
second), and fill the operator's log and disk with them. A `RateLimitedLog` writes the
first `burst` warnings of a kind as they come (ten: they say who and what, and a few
different refusals in a row are all still seen), counts the ones that follow for the rest
of `interval` seconds, and then writes one line for them all: the last of them, with how
many more there were,

    127.0.0.1:50312: HTTP 400: plain HTTP sent to the TLS port (and 2,989 more like it in
    the last 10 s)

While they keep coming, that is one line every interval; once an interval passes without
any, the next ones are written as they come again. A kind is a name chosen by the caller
from our own code (a status, a close code, an OpenSSL reason), never a peer's bytes, so
there are few of them, and a kind without warnings is forgotten. `flush()` writes what is
counted but not yet written (the server stops).
"""
from __future__ import annotations

import logging

from .loop import Loop, Timer

WARNING_INTERVAL = 10.0  # seconds: at most one line of a kind per interval, after the burst
WARNING_BURST = 10  # lines of a kind written as they come, in an interval that follows a quiet one


class _Kind:
    """One kind's interval: since when, lines written, how many counted, and the latest."""

    __slots__ = ("started", "written", "count", "latest", "timer")

    def __init__(self, started: float, written: int) -> None:
        self.started = started
        self.written = written
        self.count = 0
        self.latest = ""
        self.timer: Timer | None = None


class RateLimitedLog:
    """`warning(kind, message, *args)` as `logger.warning`, at most `burst` lines of a kind
    and then one per `interval`; see the module docstring."""

    def __init__(self, logger: logging.Logger, loop: Loop,
                 interval: float = WARNING_INTERVAL, burst: int = WARNING_BURST) -> None:
        self.logger = logger
        self.loop = loop
        self.interval = interval
        self.burst = burst
        self.kinds: dict[str, _Kind] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        entry = self.kinds.get(kind)
        if entry is None:
            entry = self._start(kind, 0)
        if entry.written < self.burst:
            entry.written += 1
            self.logger.warning(message, *args)
            return
        entry.count += 1
        entry.latest = message % args if args else message  # kept as text, not objects

    def flush(self) -> None:
        """Write every kind's count now, and forget them."""
        kinds, self.kinds = self.kinds, {}
        for entry in kinds.values():
            if entry.timer is not None:
                entry.timer.cancel()
            self._write(entry)

    def _start(self, kind: str, written: int) -> _Kind:
        entry = self.kinds[kind] = _Kind(self.loop.now, written)
        entry.timer = self.loop.call_later(self.interval, self._interval_over, kind)
        return entry

    def _interval_over(self, kind: str) -> None:
        entry = self.kinds.pop(kind, None)
        if entry is None or not entry.count:
            return  # none to count: the next ones are written as they come
        self._write(entry)
        self._start(kind, self.burst)  # they keep coming: the next line in an interval

    def _write(self, entry: _Kind) -> None:
        if not entry.count:
            return
        more = entry.count - 1
        if not more:
            self.logger.warning("%s", entry.latest)
            return
        seconds = max(self.loop.now - entry.started, 0.0)
        self.logger.warning("%s (and %s more like it in the last %s s)", entry.latest,
                            f"{more:,}", f"{seconds:.0f}" if seconds >= 1 else f"{seconds:.1f}")

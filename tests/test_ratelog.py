"""Warnings anybody can cause in bulk (websocket/net/ratelog.py): the first few of a kind at
once, the rest of an interval counted and written as one line, kinds apart, nothing lost at
the end. On the real loop, with a short interval."""
from __future__ import annotations

import logging
import time

import pytest

from websocket.net.loop import Loop
from websocket.net.ratelog import WARNING_BURST, RateLimitedLog

INTERVAL = 0.2


def run_for(loop: Loop, seconds: float) -> None:
    end = time.monotonic() + seconds
    loop.call_at(end, lambda: None)
    loop.run(until=lambda: time.monotonic() >= end)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_one_line_now_one_for_the_rest_of_the_interval(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    loop = Loop()
    warnings = RateLimitedLog(logging.getLogger("test.ratelog"), loop, INTERVAL, burst=1)
    with caplog.at_level(logging.WARNING, logger="test.ratelog"):
        for n in range(3000):
            warnings.warning("plain HTTP", "peer %d: HTTP 400: plain HTTP", n)
        warnings.warning("HTTP 403", "peer %d: HTTP 403: not allowed", 7)  # another kind
        assert lines(caplog) == ["peer 0: HTTP 400: plain HTTP", "peer 7: HTTP 403: not allowed"]
        run_for(loop, INTERVAL * 1.5)
        assert lines(caplog)[2:] == [
            "peer 2999: HTTP 400: plain HTTP (and 2,998 more like it in the last 0.2 s)"]
        assert set(warnings.kinds) == {"plain HTTP"}  # still counting; 403 had no more
        run_for(loop, INTERVAL * 1.5)  # an interval without any: forgotten
        assert not warnings.kinds and len(lines(caplog)) == 3
        warnings.warning("plain HTTP", "peer %d: HTTP 400: plain HTTP", 1)  # at once again
        assert lines(caplog)[3:] == ["peer 1: HTTP 400: plain HTTP"]


def test_a_flood_that_goes_on_is_one_line_an_interval(caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    loop = Loop()
    warnings = RateLimitedLog(logging.getLogger("test.ratelog"), loop, INTERVAL, burst=1)
    with caplog.at_level(logging.WARNING, logger="test.ratelog"):
        end = time.monotonic() + INTERVAL * 4.5
        sent = 0
        while time.monotonic() < end:
            for _ in range(50):
                warnings.warning("close 1002", "user %d: closing with 1002", sent)
                sent += 1
            loop.run_once()
        warnings.flush()  # the server stops: the last count is written, not lost
    written = lines(caplog)
    assert 4 <= len(written) <= 7, written
    counted = 1 + sum(int(line.split("(and ")[1].split(" ")[0].replace(",", "")) + 1
                      for line in written[1:])
    assert counted == sent  # every warning is in a line or a count
    assert not warnings.kinds


def test_one_more_is_written_as_itself() -> None:
    loop = Loop()
    logger = logging.getLogger("test.ratelog.one")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger.addHandler(Keep())
    try:
        warnings = RateLimitedLog(logger, loop, INTERVAL, burst=1)
        warnings.warning("TLS error: bad record mac", "%s: TLS error", "a")
        warnings.warning("TLS error: bad record mac", "%s: TLS error", "b")
        run_for(loop, INTERVAL * 1.5)
        assert seen == ["a: TLS error", "b: TLS error"]
    finally:
        logger.handlers.clear()


def test_the_first_few_are_written_as_they_come(caplog: pytest.LogCaptureFixture) -> None:
    """By default the first WARNING_BURST of a kind are all written (three different 404s
    in a row are three lines), then counted; after a flood the next interval has no burst
    of its own, after a quiet one it has."""
    loop = Loop()
    warnings = RateLimitedLog(logging.getLogger("test.ratelog"), loop, INTERVAL)
    with caplog.at_level(logging.WARNING, logger="test.ratelog"):
        for n in range(100):
            warnings.warning("HTTP 404", "HTTP 404: no WebSocket at /%d", n)
        assert lines(caplog) == [f"HTTP 404: no WebSocket at /{n}" for n in range(WARNING_BURST)]
        run_for(loop, INTERVAL * 1.5)
        assert lines(caplog)[WARNING_BURST:] == [
            f"HTTP 404: no WebSocket at /99 (and {100 - WARNING_BURST - 1} more like it in "
            "the last 0.2 s)"]
        warnings.warning("HTTP 404", "HTTP 404: no WebSocket at /%d", 100)  # still a flood
        assert len(lines(caplog)) == WARNING_BURST + 1
        run_for(loop, INTERVAL * 3)  # its line, then a quiet interval
        assert lines(caplog)[-1] == "HTTP 404: no WebSocket at /100"
        warnings.warning("HTTP 404", "HTTP 404: no WebSocket at /%d", 101)
        assert lines(caplog)[-1] == "HTTP 404: no WebSocket at /101"

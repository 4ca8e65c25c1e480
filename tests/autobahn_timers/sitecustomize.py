"""Loaded by the Autobahn|Testsuite runner's Python (`make conformance` puts this folder on
PYTHONPATH): txaio's batched timers must never fire early.

Why. Autobahn's client gives a server `closeHandshakeTimeout` = 1 s to answer its close frame,
and `serverConnectionDropTimeout` = 1 s to close TCP after that; both go through txaio's
`_BatchedTimer.call_later`, which quantizes the deadline as `int(now + delay) * 1000`
milliseconds (txaio 26.6.1). `int()` drops the fraction of a *second* before the 200 ms
buckets are applied, so a "1 s" timeout fires at the next whole second of the wall clock:
anywhere from 1 s to 0 s after it was set. A close sent at hh:mm:13.9998 times out at
hh:mm:14.0000, and Autobahn then aborts the connection (a TCP reset) and judges the close
UNCLEAN, however fast the server was.

Seen in a packet capture of `make conformance` on the loaded 2-core machine (case 12.1.8):
the client's close at .999779 s, our close frame at .000021 (0.24 ms later) and our FIN at
.000032, the client's reset at .000214, and the report saying the client never read our
close code. The chance of a case failing this way is about the server's answer time divided
by one second, so it grows with the machine's load: one UNCLEAN case in three full 12.x/13.x
runs under load, none when the machine is quiet.

The fix, here because the runner belongs to the team's shared tools: round the deadline *up*
to its bucket, so that a timeout is never shorter than asked (at most 200 ms longer). Nothing
else of Autobahn's behaviour or judgement changes. Without txaio (pip's own processes while
the runner installs itself) this does nothing.
"""
from __future__ import annotations

import math

try:
    from txaio import _common
except ImportError:  # not the runner's venv (or not yet installed)
    _common = None

if _common is not None:
    _original = _common._BatchedTimer.call_later

    def _call_later(self, delay, func, *args, **kwargs):  # type: ignore[no-untyped-def]
        """As txaio's, but the bucket is the first one at or after now + delay."""
        now = self._get_seconds()
        bucket = self._bucket_milliseconds
        real_time = int(math.ceil((now + delay) * 1000.0 / bucket) * bucket)
        call = _common._BatchedCall(self, real_time, lambda: func(*args, **kwargs))
        try:
            self._buckets[real_time][1].append(call)
        except KeyError:
            delayed = self._create_delayed_call(max(0.0, real_time / 1000.0 - now),
                                                self._notify_bucket, real_time)
            self._buckets[real_time] = (delayed, [call])
        return call

    _common._BatchedTimer.call_later = _call_later

    # Check the patch took, on a clock just before a whole second: a 1 s timeout set at
    # x.9998 must not be due before x + 1.9998.
    def _probe_delay() -> float:
        made: list[float] = []
        timer = _common._BatchedTimer(200.0, 100, seconds_provider=lambda: 1000.9998,
                                      delayed_call_creator=lambda d, *a: made.append(d))
        timer.call_later(1.0, lambda: None)
        return made[0]

    if _probe_delay() < 1.0:
        raise SystemExit("tests/autobahn_timers: txaio's batched timer still fires early")

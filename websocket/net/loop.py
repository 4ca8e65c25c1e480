"""The reactor: sockets that are ready, timers that are due, and nothing else.

This is the article's `while (true) { socket_select(...) }` on its own, the way Redis's
`ae.c` is only file events and time events. It knows nothing of WebSocket, HTTP or users.
One pass of `run()`:

    1. wait in select() until a watched socket is ready or the next timer is due;
    2. call `on_readable()` / `on_writable()` of each ready socket's handler;
    3. run the callbacks `call_soon()` queued, then the timers that are due;
    4. before sleeping again: flush every object in `pending` (output queued during this
       pass leaves in one send per object, as Redis's beforeSleep writes its clients),
       then run the `before_sleep` steps.

A handler that raises gets `on_error(exc)`; a timer or callback that raises is logged with
its traceback. Either way only that one thing is affected. A cancelled timer lets go of its
callback and arguments at once (a closed connection's handshake deadline must not keep the
connection alive until it would have fallen due), and the heap is compacted whenever more
than half of it is cancelled timers, so connections that come and go leave no trail.
Signals (`add_signal_handler`) are delivered through a socketpair, so the callback runs in
the loop, never inside the signal handler. There are no threads.
"""
from __future__ import annotations

import heapq
import logging
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("websocket")

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
COMPACT_MIN = 64  # cancelled timers below this many are left to fall due


class Handler(Protocol):
    """What the loop calls for a watched socket."""

    def on_readable(self) -> None: ...
    def on_writable(self) -> None: ...
    def on_error(self, exc: Exception) -> None: ...


class Flushable(Protocol):
    def flush(self) -> None: ...


def _nothing(*args: Any) -> None:
    """What a cancelled or finished timer holds instead of its callback."""


class Timer:
    """A call scheduled with `call_at` / `call_later`; `cancel()` it while it is pending.

    The timer heap holds these objects themselves (ordered by `when`): one small object per
    timer, which matters when every one of 10,000 users has a handshake deadline.
    """

    __slots__ = ("when", "callback", "args", "cancelled", "loop")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...],
                 loop: Loop | None = None) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False
        self.loop = loop  # told of the cancel, while the timer is in its heap

    def cancel(self) -> None:
        """It will not run, and what it would have called is let go of now. (The timer
        itself stays in the heap until it is due or the heap is compacted.)"""
        if self.cancelled:
            return
        self.cancelled = True
        self.callback, self.args = _nothing, ()
        if self.loop is not None:
            self.loop._timer_cancelled()

    def __lt__(self, other: Timer) -> bool:
        return self.when < other.when


class Repeating:
    """The handle of `call_every`: `cancel()` stops the schedule."""

    __slots__ = ("timer",)

    def __init__(self) -> None:
        self.timer: Timer | None = None

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None

    @property
    def cancelled(self) -> bool:
        return self.timer is None


class Loop:
    """A selector of handlers, a timer heap, and the steps of one pass (see the module)."""

    def __init__(self, selector: str = "default") -> None:
        self.selector: selectors.BaseSelector = (
            selectors.SelectSelector() if selector == "select" else selectors.DefaultSelector())
        self.now = time.monotonic()  # the time of the current pass
        self.wall_now = time.time()  # ... and the wall-clock time of it
        self.passes = 0  # passes of run_once so far (for the operator's metrics)
        # Objects with output queued during this pass: flushed once each before sleeping.
        self.pending: dict[Flushable, None] = {}
        self._timers: list[Timer] = []
        self._cancelled = 0  # timers in the heap that were cancelled
        self._soon: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._before_sleep: list[Callable[[], Any]] = []
        self._running = False
        self._stopping = False
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._signal_callbacks: dict[int, Callable[[], Any]] = {}
        self._signals_seen: list[int] = []
        self._old_signal_state: tuple[int, dict[int, Any]] | None = None

    @property
    def selector_name(self) -> str:
        """The readiness API in use, e.g. 'EpollSelector' or 'SelectSelector'."""
        return type(self.selector).__name__

    # -- sockets ---------------------------------------------------------------------------

    def watch(self, sock: socket.socket, handler: Handler, events: int, watched: int) -> int:
        """Watch `sock` for `events` (READ, WRITE, both, or 0 for neither) instead of
        `watched`, what it was watched for until now; returns `events`. The caller keeps
        that number (the loop keeps no table of its own beside the selector's)."""
        if events == watched:
            return events
        if not watched:
            self.selector.register(sock, events, handler)
        elif not events:
            self.selector.unregister(sock)
        else:
            self.selector.modify(sock, events, handler)
        return events

    def forget(self, sock: socket.socket) -> None:
        """Stop watching `sock` whatever it was watched for (before closing it)."""
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    # -- time ----------------------------------------------------------------------------

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """Call `callback(*args)` in the first pass at or after monotonic time `when`."""
        timer = Timer(when, callback, args, self)
        heapq.heappush(self._timers, timer)
        return timer

    def _timer_cancelled(self) -> None:
        """One more cancelled timer in the heap: when they are more than half of it (and
        the heap is not tiny), drop them all, in O(n), so that the heap is never more than
        twice the timers still pending."""
        self._cancelled += 1
        timers = self._timers
        if self._cancelled > COMPACT_MIN and self._cancelled * 2 > len(timers):
            self._timers = [timer for timer in timers if not timer.cancelled]
            heapq.heapify(self._timers)
            self._cancelled = 0

    def _popped(self) -> Timer:
        """The earliest timer, out of the heap (it no longer tells the loop of a cancel)."""
        timer = heapq.heappop(self._timers)
        timer.loop = None
        if timer.cancelled:
            self._cancelled -= 1
        return timer

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        return self.call_at(time.monotonic() + delay, callback, *args)

    def call_every(self, interval: float, callback: Callable[..., Any], *args: Any) -> Repeating:
        """Call `callback(*args)` every `interval` seconds until cancelled. The schedule is
        kept from the start, whatever the calls cost, and a call that raises is logged
        and does not end it."""
        if interval <= 0:
            raise ValueError("call_every needs an interval above 0 seconds")
        handle = Repeating()

        def tick(due: float) -> None:
            nxt = due + interval
            now = time.monotonic()
            if nxt <= now:  # the loop was late (a long pass): skip the missed calls
                nxt = now + interval - (now - due) % interval
            handle.timer = self.call_at(nxt, tick, nxt)
            callback(*args)

        first = time.monotonic() + interval
        handle.timer = self.call_at(first, tick, first)
        return handle

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Call `callback(*args)` in this pass, after the sockets (or in the next one)."""
        self._soon.append((callback, args))

    def before_sleep(self, step: Callable[[], Any]) -> None:
        """Run `step()` at the end of every pass, after the pending objects are flushed."""
        self._before_sleep.append(step)

    def _timeout(self) -> float | None:
        if self._soon or self.pending:
            return 0.0
        while self._timers and self._timers[0].cancelled:
            self._popped()
        if not self._timers:
            return None
        return max(0.0, self._timers[0].when - time.monotonic())

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0].when <= now:
            timer = self._popped()
            if timer.cancelled:
                continue
            callback, args = timer.callback, timer.args
            timer.cancel()  # it runs now: a late cancel() is harmless, and it holds nothing
            self._call(callback, args)

    def _call(self, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            callback(*args)
        except Exception:
            name = getattr(callback, "__qualname__", None) or repr(callback)
            log.exception("timer %s raised; the server carries on", name)

    # -- signals ---------------------------------------------------------------------------

    def add_signal_handler(self, signum: int, callback: Callable[[], Any]) -> bool:
        """Call `callback()` from the loop when signal `signum` arrives. False (and nothing
        done) outside the main thread, where Python cannot handle signals."""
        if threading.current_thread() is not threading.main_thread():
            return False
        if self._wakeup is None:
            reader, writer = socket.socketpair()
            reader.setblocking(False)
            writer.setblocking(False)
            self._wakeup = (reader, writer)
            self.selector.register(reader, READ, _Wakeup(self))
            # A signal writes a byte to `writer`, which wakes select() at once.
            old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
            self._old_signal_state = (old_fd, {})
        assert self._old_signal_state is not None
        old_handlers = self._old_signal_state[1]
        if signum not in old_handlers:
            old_handlers[signum] = signal.signal(signum, self._on_signal)
        self._signal_callbacks[signum] = callback
        return True

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals_seen.append(signum)  # handled by _Wakeup, in the loop

    def _dispatch_signals(self) -> None:
        assert self._wakeup is not None
        try:
            while self._wakeup[0].recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        seen, self._signals_seen = self._signals_seen, []
        for signum in seen:
            callback = self._signal_callbacks.get(signum)
            if callback is not None:
                self._call(callback, ())

    def remove_signal_handlers(self) -> None:
        """Give the signals back to whoever had them before."""
        if self._wakeup is None or self._old_signal_state is None:
            return
        old_fd, old_handlers = self._old_signal_state
        for signum, handler in old_handlers.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(old_fd)
        for sock in self._wakeup:
            self.forget(sock)
            sock.close()
        self._wakeup = None
        self._old_signal_state = None
        self._signal_callbacks.clear()

    # -- running -----------------------------------------------------------------------------

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Run passes until `stop()` is called (or `until()` says so, checked every pass)."""
        self._running = True
        self._stopping = False
        select = self.selector.select
        try:
            while not self._stopping and not (until is not None and until()):
                self.run_once(select)
        finally:
            self._running = False

    def run_once(self, select: Callable[[float | None], list[Any]] | None = None) -> None:
        """One pass (see the module docstring)."""
        ready = (select or self.selector.select)(self._timeout())
        self.passes += 1
        self.now = time.monotonic()
        self.wall_now = time.time()
        for key, mask in ready:
            handler = key.data
            try:
                if mask & READ:
                    handler.on_readable()
                if mask & WRITE:
                    handler.on_writable()
            except Exception as exc:  # a bug while serving one socket costs that one only
                self._handler_failed(handler, exc)
        if self._soon:
            soon, self._soon = self._soon, []
            for callback, args in soon:
                self._call(callback, args)
        if self._timers and self._timers[0].when <= time.monotonic():
            self._run_timers()
        self.flush_pending()
        for step in self._before_sleep:
            step()

    def flush_pending(self) -> None:
        """Flush every object that queued output since the last time (Redis: beforeSleep)."""
        while self.pending:
            pending, self.pending = self.pending, {}
            for item in pending:
                try:
                    item.flush()
                except Exception as exc:
                    self._handler_failed(item, exc)

    def _handler_failed(self, handler: Any, exc: Exception) -> None:
        try:
            handler.on_error(exc)
        except Exception:
            log.exception("handler %r failed while handling its own error", handler)

    def stop(self) -> None:
        """End `run()` after the current pass."""
        self._stopping = True

    def close(self) -> None:
        self.remove_signal_handlers()
        self.selector.close()


class _Wakeup:
    """The read end of the signal socketpair, as a handler."""

    __slots__ = ("loop",)

    def __init__(self, loop: Loop) -> None:
        self.loop = loop

    def on_readable(self) -> None:
        self.loop._dispatch_signals()

    def on_writable(self) -> None:  # pragma: no cover - never watched for writing
        pass

    def on_error(self, exc: Exception) -> None:  # pragma: no cover - nothing can fail here
        log.error("signal wake-up failed: %s", exc)

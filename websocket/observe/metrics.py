"""The server's counters and gauges, and their Prometheus text exposition (format 0.0.4).

Sans-I/O: nothing here opens a socket, reads a clock on the hot path or logs. The loop counts
by plain attribute arithmetic on a `ServerMetrics`, with no call and no lock (one thread):

    metrics.messages_received += 1
    metrics.received_bytes += n
    metrics.closes[code] += 1            # a defaultdict(int): the label value is the key

and `GET /metrics` answers `metrics.render()` with `Content-Type: CONTENT_TYPE`. Reading the
values happens only then: each family in the `Registry` holds a function that returns its
current value (a number, or a mapping of label value to number).

The text format (Prometheus "Exposition formats", text-based format 0.0.4): for each family a
`# HELP name text` line (backslash and line feed escaped), a `# TYPE name counter|gauge` line,
then one `name{label="value"} number` line per sample; label values escape backslash, double
quote and line feed. Lines end with a line feed, the last one included. Counters are named
`..._total` and only ever go up; a restart is seen by the scraper as a reset, which is what
`process_start_time_seconds` is for.

Not here: histograms and summaries (a latency histogram would cost a bisect per message),
timestamps on samples (the scraper stamps them), OpenMetrics, the HTTP answer itself.
"""
from __future__ import annotations

import math
import re
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Literal

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Number = int | float
LabelValue = int | str
# Mapping is invariant in its key: spell out the key types a caller's dict may have.
Samples = Number | Mapping[str, Number] | Mapping[int, Number] | Mapping[LabelValue, Number]
Kind = Literal["counter", "gauge"]
PROTOCOLS = ("rfc6455", "hixie76", "hixie75")  # `User.protocol` values

# Prometheus data model: metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label names
# [a-zA-Z_][a-zA-Z0-9_]* and those beginning with "__" are reserved for internal use.
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def escape_help(text: str) -> str:
    """HELP text: backslash as `\\\\`, line feed as `\\n` (format 0.0.4)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def escape_label_value(value: str) -> str:
    """A label value: backslash, double quote and line feed escaped (format 0.0.4)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_number(value: Number) -> str:
    """A sample value as Go's ParseFloat reads it: integers exact, `+Inf`, `-Inf`, `NaN`."""
    if isinstance(value, int):
        return str(int(value))  # int(): a bool prints as 0 or 1
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)  # shortest form that reads back as the same double


@dataclass(frozen=True)
class Family:
    """One metric family: its name, type, help text, optional label and how to read it.

    `read()` returns a number, or (when `label` is set) a mapping of label value to number,
    one sample per entry, in sorted order of the label values.
    """

    name: str
    kind: Kind
    help: str
    read: Callable[[], Samples]
    label: str | None = None

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        samples = self.read()
        if self.label is None:
            if not isinstance(samples, int | float):
                raise TypeError(f"{self.name} has no label but read() gave {samples!r}")
            out.append(f"{self.name} {format_number(samples)}")
            return out
        if not isinstance(samples, Mapping):
            raise TypeError(f"{self.name} has label {self.label!r} but read() gave {samples!r}")
        for key, value in sorted(((str(key), value) for key, value in samples.items())):
            out.append(f'{self.name}{{{self.label}="{escape_label_value(key)}"}} '
                       f"{format_number(value)}")
        return out


class Registry:
    """Metric families by name, rendered in the order they were registered."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}

    def register(self, name: str, kind: Kind, help: str, read: Callable[[], Samples],
                 label: str | None = None) -> None:
        """Add a family.

        Raises:
            ValueError: an invalid or duplicate name, a reserved or invalid label name, or a
                counter whose name does not end in `_total` (the naming convention the
                scrapers rely on).
        """
        if not METRIC_NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        if name in self._families:
            raise ValueError(f"metric {name!r} registered twice")
        if kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must be named ..._total")
        if kind not in ("counter", "gauge"):
            raise ValueError(f"unknown metric type {kind!r}")
        if label is not None and (not LABEL_NAME.match(label) or label.startswith("__")):
            raise ValueError(f"invalid label name {label!r}")
        self._families[name] = Family(name, kind, help, read, label)

    def names(self) -> list[str]:
        return list(self._families)

    def render(self) -> bytes:
        """Every family in the text exposition format 0.0.4, UTF-8, ending with a line feed."""
        lines: list[str] = []
        for family in self._families.values():
            lines.extend(family.lines())
        return ("\n".join(lines) + "\n").encode("utf-8")


class ServerMetrics:
    """What an operator watches (issue 11 §4), as attributes the loop increments inline.

    Counters only ever grow; `users_open` and `connections_open` are gauges the server keeps
    current (or sets just before `render()`, e.g. from `get_users()` on each scrape).
    Labelled values are `defaultdict(int)`s: `metrics.closes[1000] += 1` needs no setdefault.
    """

    __slots__ = (
        "broadcast_deliveries", "broadcasts", "callback_seconds", "closes", "connections",
        "connections_open", "loop_passes", "messages_received", "messages_sent",
        "received_bytes", "refused", "registry", "sent_bytes", "slow_users_dropped",
        "start_time", "tls_handshake_failures", "users_open",
    )

    def __init__(self, registry: Registry | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.start_time: float = clock()  # seconds since the epoch
        # protocol -> users; every protocol shown from the start, so a graph has no gap
        self.users_open: defaultdict[str, int] = defaultdict(int, dict.fromkeys(PROTOCOLS, 0))
        self.connections: int = 0  # TCP connections accepted
        self.connections_open: int = 0  # open sockets: users, page requests, handshakes
        self.messages_received: int = 0  # whole messages, after reassembly
        self.messages_sent: int = 0  # messages queued for one user (a broadcast: one each)
        self.received_bytes: int = 0  # bytes read from sockets (after TLS)
        self.sent_bytes: int = 0  # bytes the kernel accepted (before TLS)
        self.broadcasts: int = 0  # broadcast() calls
        self.broadcast_deliveries: int = 0  # users a broadcast was queued for
        self.closes: defaultdict[LabelValue, int] = defaultdict(int)  # close code -> users
        self.refused: defaultdict[int, int] = defaultdict(int)  # HTTP status -> requests
        self.tls_handshake_failures: int = 0
        self.slow_users_dropped: int = 0  # backlog over --max-buffer
        self.loop_passes: int = 0
        self.callback_seconds: float = 0.0  # time inside process/on_connect/on_disconnect
        self.registry = registry if registry is not None else Registry()
        self._register(self.registry)

    def _register(self, registry: Registry) -> None:
        def counter(name: str, attr: str, help: str, label: str | None = None) -> None:
            registry.register(f"websocket_{name}_total", "counter", help,
                              partial(getattr, self, attr), label)

        def gauge(name: str, attr: str, help: str, label: str | None = None) -> None:
            registry.register(name, "gauge", help, partial(getattr, self, attr), label)

        gauge("websocket_users_open", "users_open",
              "WebSocket users with an open connection, by protocol.", "protocol")
        gauge("websocket_connections_open", "connections_open",
              "Open TCP connections: WebSocket users, page requests and handshakes.")
        counter("connections", "connections", "TCP connections accepted.")
        counter("messages_received", "messages_received", "Whole messages received.")
        counter("messages_sent", "messages_sent", "Messages queued, one per receiving user.")
        counter("received_bytes", "received_bytes", "Bytes read from client sockets.")
        counter("sent_bytes", "sent_bytes", "Bytes written to client sockets.")
        counter("broadcasts", "broadcasts", "Calls to broadcast().")
        counter("broadcast_deliveries", "broadcast_deliveries",
                "Users a broadcast message was queued for.")
        counter("closes", "closes", "WebSocket users closed, by close code.", "code")
        counter("refused_requests", "refused", "HTTP requests refused, by status.", "status")
        counter("tls_handshake_failures", "tls_handshake_failures",
                "TLS handshakes that failed or timed out.")
        counter("slow_users_dropped", "slow_users_dropped",
                "Users disconnected for leaving more than --max-buffer unread.")
        counter("loop_passes", "loop_passes", "Passes of the event loop.")
        counter("callback_seconds", "callback_seconds",
                "Seconds spent inside the chat callbacks.")
        gauge("process_start_time_seconds", "start_time",
              "Start time of the process since the Unix epoch, in seconds.")

    def render(self) -> bytes:
        """The text exposition of every family (see `Registry.render`)."""
        return self.registry.render()

"""websocket/observe/metrics.py: the counters, and their text exposition read back by real parsers.

Two readers check every rendering: `prometheus_client.parser` (the reference Python
implementation, which is lax: it accepts lines Prometheus would refuse), and `strict_lines`
below, the line grammar of the text format 0.0.4 as the Prometheus documentation states it.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from websocket.observe.metrics import (
    CONTENT_TYPE,
    PROTOCOLS,
    Registry,
    ServerMetrics,
    escape_help,
    escape_label_value,
    format_number,
)

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
VALUE = r"(?:[+-]?Inf|NaN|[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
HELP_LINE = re.compile(rf"# HELP ({NAME}) (?:[^\\\n]|\\[\\n])*\Z")
TYPE_LINE = re.compile(rf"# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)\Z")
SAMPLE_LINE = re.compile(rf"({NAME})(?:\{{(?:{LABEL}(?:,{LABEL})*)?\}})? ({VALUE})\Z")


def strict_lines(text: str) -> Iterator[tuple[str, str, str]]:
    """Check the whole exposition line by line; yield (family, type, sample line).

    Each family: HELP, then TYPE, then its samples, all under the same name; no family twice;
    every line ends with a line feed, the last one included.
    """
    assert text.endswith("\n"), "the last line must end with a line feed"
    lines = text[:-1].split("\n")
    seen: set[str] = set()
    family = kind = ""
    i = 0
    while i < len(lines):
        help_line = HELP_LINE.match(lines[i])
        assert help_line, f"line {i + 1}: expected # HELP, got {lines[i]!r}"
        family = help_line.group(1)
        assert family not in seen, f"{family} appears twice"
        seen.add(family)
        type_line = TYPE_LINE.match(lines[i + 1])
        assert type_line and type_line.group(1) == family, f"line {i + 2}: {lines[i + 1]!r}"
        kind = type_line.group(2)
        if kind == "counter":
            assert family.endswith("_total"), f"counter {family} not named ..._total"
        i += 2
        while i < len(lines) and not lines[i].startswith("#"):
            sample = SAMPLE_LINE.match(lines[i])
            assert sample, f"line {i + 1}: not a sample line: {lines[i]!r}"
            assert sample.group(1) == family, f"line {i + 1}: sample outside its family"
            yield family, kind, lines[i]
            i += 1


def families(metrics: ServerMetrics | Registry) -> dict[str, Metric]:
    text = metrics.render().decode("utf-8")
    list(strict_lines(text))
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(found: dict[str, Metric], name: str, **labels: str) -> float:
    """The one sample of family `name` (counters: without `_total`) with these labels."""
    matches = [s.value for s in found[name].samples if s.labels == labels]
    assert len(matches) == 1, f"{name}{labels}: {found[name].samples}"
    return float(matches[0])


def test_content_type_is_the_text_format_0_0_4() -> None:
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_every_metric_of_the_issue_is_exposed_with_its_type() -> None:
    found = families(ServerMetrics())
    expected = {
        "websocket_users_open": "gauge",
        "websocket_connections_open": "gauge",
        "websocket_connections": "counter",
        "websocket_messages_received": "counter",
        "websocket_messages_sent": "counter",
        "websocket_received_bytes": "counter",
        "websocket_sent_bytes": "counter",
        "websocket_broadcasts": "counter",
        "websocket_broadcast_deliveries": "counter",
        "websocket_closes": "counter",
        "websocket_refused_requests": "counter",
        "websocket_tls_handshake_failures": "counter",
        "websocket_slow_users_dropped": "counter",
        "websocket_loop_passes": "counter",
        "websocket_callback_seconds": "counter",
        "process_start_time_seconds": "gauge",
    }
    assert {name: family.type for name, family in found.items()} == expected
    assert all(family.documentation for family in found.values())


def test_a_fresh_server_shows_zeros_and_every_protocol() -> None:
    found = families(ServerMetrics(clock=lambda: 1_700_000_000.5))
    for protocol in PROTOCOLS:
        assert value(found, "websocket_users_open", protocol=protocol) == 0
    assert value(found, "websocket_messages_received") == 0
    assert found["websocket_closes"].samples == []  # no code seen yet: no sample
    assert value(found, "process_start_time_seconds") == 1_700_000_000.5


def test_increments_show_up_with_their_labels() -> None:
    metrics = ServerMetrics()
    metrics.users_open["rfc6455"] += 3
    metrics.users_open["hixie76"] += 1
    metrics.users_open["rfc6455"] -= 1
    metrics.connections += 7
    metrics.connections_open = 4
    metrics.messages_received += 5
    metrics.messages_sent += 500
    metrics.received_bytes += 12345
    metrics.sent_bytes += 2**40  # large integers are printed exactly
    metrics.broadcasts += 5
    metrics.broadcast_deliveries += 495
    metrics.closes[1000] += 2
    metrics.closes[1006] += 1
    metrics.closes["hixie"] += 1  # draft users have no code: any label value works
    metrics.refused[404] += 3
    metrics.refused[503] += 1
    metrics.tls_handshake_failures += 2
    metrics.slow_users_dropped += 1
    metrics.loop_passes += 99
    metrics.callback_seconds += 0.125
    found = families(metrics)
    assert value(found, "websocket_users_open", protocol="rfc6455") == 2
    assert value(found, "websocket_users_open", protocol="hixie76") == 1
    assert value(found, "websocket_users_open", protocol="hixie75") == 0
    assert value(found, "websocket_connections") == 7
    assert value(found, "websocket_connections_open") == 4
    assert value(found, "websocket_messages_received") == 5
    assert value(found, "websocket_messages_sent") == 500
    assert value(found, "websocket_received_bytes") == 12345
    assert value(found, "websocket_sent_bytes") == 2**40
    assert value(found, "websocket_broadcasts") == 5
    assert value(found, "websocket_broadcast_deliveries") == 495
    assert value(found, "websocket_closes", code="1000") == 2
    assert value(found, "websocket_closes", code="1006") == 1
    assert value(found, "websocket_closes", code="hixie") == 1
    assert value(found, "websocket_refused_requests", status="404") == 3
    assert value(found, "websocket_refused_requests", status="503") == 1
    assert value(found, "websocket_tls_handshake_failures") == 2
    assert value(found, "websocket_slow_users_dropped") == 1
    assert value(found, "websocket_loop_passes") == 99
    assert value(found, "websocket_callback_seconds") == 0.125
    assert found["websocket_closes"].samples[0].name == "websocket_closes_total"


def test_the_exact_bytes_of_a_labelled_counter() -> None:
    metrics = ServerMetrics()
    metrics.refused[503] += 1
    metrics.refused[404] += 2
    text = metrics.render().decode()
    assert ("# HELP websocket_refused_requests_total HTTP requests refused, by status.\n"
            "# TYPE websocket_refused_requests_total counter\n"
            'websocket_refused_requests_total{status="404"} 2\n'
            'websocket_refused_requests_total{status="503"} 1\n') in text
    assert "websocket_received_bytes_total 0\n" in text


HOSTILE = ['a"b', "back\\slash", "line\nfeed", '\\"\n', "\\n", "", "émoji 👋", '"}', "a,b=c"]


@pytest.mark.parametrize("label_value", HOSTILE)
def test_label_values_are_escaped(label_value: str) -> None:
    registry = Registry()
    registry.register("test_odd_total", "counter", "odd label values", lambda: {label_value: 1},
                      label="path")
    text = registry.render().decode()
    assert len(list(strict_lines(text))) == 1
    (family,) = text_string_to_metric_families(text)
    assert family.samples[0].labels == {"path": label_value}


def test_label_escaping_exact() -> None:
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    assert escape_help('a\\b"c\nd') == 'a\\\\b"c\\nd'  # HELP does not escape quotes


@pytest.mark.parametrize("text", ["back\\slash and\nnew line", 'quote " kept', "\\n literal"])
def test_help_text_is_escaped(text: str) -> None:
    registry = Registry()
    registry.register("test_gauge", "gauge", text, lambda: 1)
    rendered = registry.render().decode()
    list(strict_lines(rendered))
    (family,) = text_string_to_metric_families(rendered)
    assert family.documentation == text


@pytest.mark.parametrize(("number", "text"), [
    (0, "0"), (42, "42"), (2**64, "18446744073709551616"), (True, "1"), (0.5, "0.5"),
    (1e-06, "1e-06"), (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN"),
])
def test_numbers(number: float, text: str) -> None:
    assert format_number(number) == text


def test_special_values_parse() -> None:
    registry = Registry()
    registry.register("test_values", "gauge", "specials", lambda: {"inf": math.inf,
                      "ninf": -math.inf, "nan": math.nan, "tiny": 5e-324}, label="which")
    (family,) = families(registry).values()
    got = {s.labels["which"]: s.value for s in family.samples}
    assert got["inf"] == math.inf and got["ninf"] == -math.inf and math.isnan(got["nan"])
    assert got["tiny"] == 5e-324


@pytest.mark.parametrize(("name", "kind", "label"), [
    ("1starts_with_digit_total", "counter", None),
    ("has-dash_total", "counter", None),
    ("no_suffix", "counter", None),
    ("ok_total", "counter", "__reserved"),
    ("ok_total", "counter", "has-dash"),
    ("ok_total", "histogram", None),
])
def test_register_refuses_bad_names(name: str, kind: str, label: str | None) -> None:
    with pytest.raises(ValueError):
        Registry().register(name, kind, "x", lambda: 0, label)  # type: ignore[arg-type]


def test_register_refuses_a_duplicate() -> None:
    registry = Registry()
    registry.register("dup_total", "counter", "x", lambda: 0)
    with pytest.raises(ValueError, match="twice"):
        registry.register("dup_total", "counter", "x", lambda: 0)


def test_a_reader_of_the_wrong_shape_is_a_bug_not_garbage() -> None:
    registry = Registry()
    registry.register("shape", "gauge", "x", lambda: {"a": 1})  # no label, but a mapping
    with pytest.raises(TypeError):
        registry.render()
    registry = Registry()
    registry.register("shape", "gauge", "x", lambda: 1, label="l")  # a label, but a number
    with pytest.raises(TypeError):
        registry.render()


def test_a_script_can_add_its_own_families_to_the_servers_registry() -> None:
    metrics = ServerMetrics()
    rooms = {"lobby": 3, "dev": 1}
    metrics.registry.register("chat_room_users", "gauge", "Users per room.", lambda: rooms,
                              label="room")
    found = families(metrics)
    assert value(found, "chat_room_users", room="lobby") == 3
    assert list(found)[-1] == "chat_room_users"  # rendered in registration order


def test_strict_reader_rejects_what_it_should() -> None:
    """The checker itself can fail: a broken exposition does not pass it."""
    bad = [
        "# HELP x_total h\n# TYPE x_total counter\nx_total 1",  # no final line feed
        "# TYPE x_total counter\nx_total 1\n",  # no HELP
        "# HELP x h\n# TYPE x counter\nx 1\n",  # counter without _total
        '# HELP x h\n# TYPE x gauge\nx{a="b\nc"} 1\n',  # raw line feed in a label value
        '# HELP x h\n# TYPE x gauge\nx{a="b"c"} 1\n',  # raw quote
        "# HELP x h\n# TYPE x gauge\ny 1\n",  # sample of another family
        "# HELP x h\n# TYPE x gauge\nx one\n",  # not a number
    ]
    for text in bad:
        with pytest.raises(AssertionError):
            list(strict_lines(text))

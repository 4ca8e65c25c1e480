"""What an operator watches: `GET /healthz` and, with --metrics, `GET /metrics`.

Plain HTTP on the chat's own port, answered before the page is looked for: neither needs
the client directory, and neither is a WebSocket path. `/healthz` answers `ok` whenever the
loop gets to it, which is the point: a loop stuck in a callback answers nothing. `/metrics`
is the Prometheus text exposition (format 0.0.4) of `ServerMetrics`; without --metrics it
is not special, and a request for it gets the page's 404.
"""
from __future__ import annotations

from collections.abc import Callable

from ..chat.pages import Response, respond
from ..protocol.handshake import Request
from .metrics import CONTENT_TYPE

HEALTHZ = "/healthz"
METRICS = "/metrics"


def answer(request: Request, render_metrics: Callable[[], bytes] | None) -> Response | None:
    """The answer to a GET or HEAD of /healthz or (when `render_metrics` is given, i.e. with
    --metrics) /metrics; None for any other request, which the page's rules then answer."""
    if request.method not in ("GET", "HEAD"):
        return None
    path = request.target.split("?", 1)[0]
    if path == HEALTHZ:
        return respond(request, b"ok\n", "text/plain; charset=utf-8")
    if path == METRICS and render_metrics is not None:
        return respond(request, render_metrics(), CONTENT_TYPE)
    return None

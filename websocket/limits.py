"""Every limit the server keeps, in one place, each with its reason (the README's table).

The options a user can set are `DEFAULTS` (server.py's `Server(**limits)`, and the command
line's --options); the rest are fixed shares and times that keep one user's traffic from
costing anybody else (see delivery.py and the README's "Fair delivery").
"""
from __future__ import annotations

from typing import Any

from .protocol.handshake import MAX_REQUEST_SIZE
from .protocol.messages import DEFAULT_MAX_INPUT_MEMORY, DEFAULT_MAX_MESSAGE_SIZE

DEFAULTS: dict[str, Any] = {
    "max_message_size": DEFAULT_MAX_MESSAGE_SIZE,  # bytes per message (RFC 6455 and hixie)
    "max_request_size": MAX_REQUEST_SIZE,  # bytes of HTTP request head
    "handshake_timeout": 10.0,  # seconds to send a complete request (and between requests)
    "close_timeout": 5.0,  # seconds a user has to answer our close frame
    "ping_interval": 30.0,  # a silent user is pinged after this long, dropped after twice; 0: off
    "message_timeout": 60.0,  # seconds to finish a message once its first frame has begun
    "max_connections": 10_000,  # WebSocket users at once; beyond it, HTTP 503
    "max_buffer": 4 << 20,  # bytes of unsent output per user before it is dropped
    "max_input_memory": DEFAULT_MAX_INPUT_MEMORY,  # bytes of unfinished messages, all users
    "allowed_origins": None,  # pages (origins) whose users may join; None: any, as the article
    "compression": True,  # permessage-deflate (RFC 7692) for clients that offer it
    "paths": None,  # request paths that may upgrade (--path); None: any
    "trust_proxy": False,  # take the client address from the nearest proxy's header
    "idle_timeout": 0.0,  # close (1000) a user that sent no message for this long; 0: off
    "metrics": False,  # serve GET /metrics (the counters are kept either way)
    "redis": None,  # redis://[:password@]host:port[/db]: one chat over many processes
    "redis_cafile": None,  # rediss://: trust this CA's PEM instead of the system's store
    "redis_prefix": "chat:",  # Redis channel (and key) names start with this
    "history": 0,  # messages of each room replayed to a newcomer; 0: off, as the article
    "history_idle": 3600.0,  # seconds a room without users and messages keeps its history
    "reuse_port": False,  # SO_REUSEPORT: --workers share the port
}

# One user's fair share of a loop pass, before everybody else is served.
READ_SIZE = 64 * 1024  # bytes read at a time: a flooder waits in its own kernel buffer
DIRECT_READ_SIZE = 1024 * 1024  # ... but a large payload streams in up to this much a read
FRAMES_PER_BATCH = 64  # frames parsed at a time, their events handled before the next ones
FRAMES_PER_TURN = 1024  # frames parsed per pass: ~3 ms of the tiniest frames
DELIVERIES_PER_TURN = 65536  # frames queued to users because of them: ~16 ms of fan-out
REPLAY_FRAMES_PER_TURN = 256  # messages of a newcomer's history replay (replay.py) a pass
IDLE_ROOMS_PER_TURN = 1000  # rooms the history's idle sweep looks at a pass: ~2.5 ms

# ... and of a user whose frames are traced (wiretap.py), the trace's cost counted in.
# --trace formats and logs every frame, in (when read) and out (when sent): 65-90 µs a
# frame on the shared test machine, where receiving one costs ~6 µs and queueing one to a
# user well under 1 µs. So a traced turn parses one frame at a time and ends once
# TRACED_FRAMES_PER_TURN frames came in, or as many went out to users because of them:
# about as long as an untraced turn. (A message is always handled whole: a broadcast to 500
# users is 500 frames out.) The frames in are traced when read, before the turn, so a
# traced connection reads TRACED_READ_SIZE bytes at a time: at most ~340 frames (empty
# ones; ~80 short chat lines) a read, and the next read waits until the turns have used
# them up. With /wire viewers only, a frame over their rate is followed, not formatted:
# its header parsed and its payload skipped (~1 µs in, a fifth of receiving it; 2-5 µs
# out, while the rate allows any at all; nothing while it is spent), and at most a burst of
# WIRE_BURST blocks is formatted at once: the shares are a half and a sixteenth.
TRACED_FRAMES_PER_TURN = 64  # --trace: frames in per turn, and frames out because of them
TRACED_READ_SIZE = 2048  # --trace: bytes read at a time from a traced connection
FOLLOWED_FRAMES_PER_TURN = FRAMES_PER_TURN // 2  # /wire viewers only: frames in per turn
FOLLOWED_DELIVERIES_PER_TURN = DELIVERIES_PER_TURN // 16  # ... and frames out

# What one queued frame costs beyond its bytes: a list slot and a bytes object's header
# (sys.getsizeof(b"") is 33), rounded up. Backlog limits count this, so a million two-byte
# pongs weigh what they really take, not 2 MB.
FRAME_COST = 48

# Fair delivery (delivery.py): a user behind (backlog over max_buffer / 4) holds the
# senders back only while it keeps up.
STALL_TIMEOUT = 0.5  # seconds the kernel may take nothing from a user that is behind
BEHIND_TIMEOUT = 1.0  # seconds a user that is behind may hold the others back

# Closing.
LINGER_TIMEOUT = 2.0  # after our last bytes and a half-close, wait this long for the EOF
SHUTDOWN_TIMEOUT = 2.0  # on Ctrl-C, how long users get to answer the 1001 close


def idle_sweep_interval(idle_timeout: float) -> float:
    """How often --idle-timeout looks for idle users: a tenth of it, between 0.05 and 10 s,
    so a user is closed at most 10% (or 10 s) late, and 10,000 users cost one short pass."""
    return min(max(idle_timeout / 10, 0.05), 10.0)

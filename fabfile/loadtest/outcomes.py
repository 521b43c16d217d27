"""What one request turned into: a Sample with an outcome class, plus the parsing that fills it.

Outcome classes (every request ends in exactly one):
    ok       an HTTP answer 2xx/3xx (redirects are not followed), or a WebSocket echo
    status   an HTTP answer outside 2xx/3xx; ``status`` holds the code (a refused WS handshake too)
    timeout  no complete answer within the request timeout
    reset    the connection broke after it was open (RST, EOF before the answer, WS closed)
    refused  the TCP connect was refused (nothing listens)
    other    anything else (DNS, a malformed answer, a wrong echo, ...)
    dropped  never sent: the generator's in-flight cap was full when it was due (see schedule.py)
"""

from __future__ import annotations

import errno
import json
import re
from dataclasses import asdict, dataclass

OK, STATUS, TIMEOUT, RESET, REFUSED, OTHER, DROPPED = "ok", "status", "timeout", "reset", "refused", "other", "dropped"
OUTCOMES = (OK, STATUS, TIMEOUT, RESET, REFUSED, OTHER, DROPPED)
# Client kinds, counted apart: a new connection per request, or a request on a kept-alive connection.
NEW_CONNECTION, KEEPALIVE = "new", "keepalive"
ERROR_CLASSES = OUTCOMES[1:]
CHAIN_DEPTH = 8  # causes/contexts followed when classifying; real chains are 2-3 long

# Library exceptions recognised by class name (anywhere in their MRO), so this module
# imports neither aiohttp nor websockets: they all mean "the open connection broke".
_RESET_CLASS_NAMES = {
    "ServerDisconnectedError", "ClientPayloadError", "ConnectionClosed", "ConnectionClosedError",
    "RemoteDisconnected", "IncompleteRead", "InvalidMessage",
}
_RESET_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}
_STREAMER_INSTANCE = re.compile(r"\binstance=(\S+)")


@dataclass
class Sample:
    """One request. ``t`` is its INTENDED send time (time.monotonic clock), ``seconds`` the latency from it."""

    t: float
    outcome: str  # one of OUTCOMES
    status: int | None = None
    instance: str | None = None
    seconds: float = 0.0
    error: str = ""
    lag: float = 0.0  # how late the generator actually sent it (seconds after ``t``)
    key: str | None = None  # scenario detail: the HLS track, the WS session
    measured: bool = True  # False when ``seconds`` is not an answer's time (a WS echo never sent)
    method: str = "GET"  # the HTTP method (a WebSocket echo counts as GET: it replays nothing)
    connection: str = NEW_CONNECTION  # the client kind that sent it: NEW_CONNECTION or KEEPALIVE
    retried: bool = False  # sent a second time on a fresh connection (keepalive.py's browser-like client)

    @property
    def failed(self) -> bool:
        return self.outcome != OK

    def to_dict(self) -> dict:
        return asdict(self)


def outcome_of_status(status: int) -> str:
    """2xx and 3xx are answers a client can use; anything else is a ``status`` error."""
    return OK if 200 <= status < 400 else STATUS


def _causes(exc: BaseException):
    """``exc`` and what it wraps (aiohttp's ``os_error``, ``__cause__``, ``__context__``), bounded."""
    seen = []
    pending = [exc]
    while pending and len(seen) < CHAIN_DEPTH:
        current = pending.pop(0)
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        pending += [getattr(current, "os_error", None), current.__cause__, current.__context__]
    return seen


def classify_exception(exc: BaseException) -> str:
    """The outcome class of a request that raised ``exc`` (never ``ok``/``status``/``dropped``)."""
    for cause in _causes(exc):
        # TimeoutError is an OSError: look at it before the errno checks.
        if isinstance(cause, TimeoutError):
            return TIMEOUT
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            return REFUSED
        if isinstance(cause, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)) \
                or getattr(cause, "errno", None) in _RESET_ERRNOS:
            return RESET
        if any(klass.__name__ in _RESET_CLASS_NAMES for klass in type(cause).__mro__):
            return RESET
    return OTHER


def describe_exception(exc: BaseException) -> str:
    """One short line for a report: the class name and message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


def instance_from_body(body: str) -> str | None:
    """The instance that answered: the API's JSON ``instance``, or a streamer's ``instance=<name>``."""
    text = body.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text).get("instance")
        except (ValueError, AttributeError):
            return None
        return str(value) if value is not None else None
    match = _STREAMER_INSTANCE.search(text)
    return match.group(1) if match else None


def cookie_from_set_cookie(values, name: str) -> str | None:
    """The value set for cookie ``name`` by some Set-Cookie header values (any header-name case upstream)."""
    for value in values:
        cookie_name, _, rest = value.partition("=")
        if cookie_name.strip() == name:
            return rest.split(";", 1)[0].strip()
    return None

"""WebSocket checks: pinned by the SERVERID cookie, closed at the kill, rebalanced, kept after UP."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from .checks import StepFailed
from .load import set_cookie_value
from .websocket import WebSocketClosed


class WebSocketChecks:
    """Mixin of FailoverTest: sessions through ``self.ws_connect`` carrying the cookie."""

    def _ws_open(self, server_cookie: str):
        """A session through the LB carrying ``SERVERID=<server_cookie>``; returns (session, welcome instance)."""
        session = self.ws_connect(self.settings.ws_path, {"Cookie": f"{self.settings.cookie_name}={server_cookie}"})
        try:
            welcome = json.loads(session.recv_text(timeout=self.settings.ws_timeout))
            return session, str(welcome.get("instance"))
        except Exception:
            session.close()
            raise

    def _ws_echo(self, session, text: str) -> str | None:
        """Send ``text``, expect it back; the instance the echo names (the demo API echoes as JSON)."""
        session.send_text(text)
        answer = session.recv_text(timeout=self.settings.ws_timeout)
        try:
            echo = json.loads(answer)
        except ValueError:
            echo = None
        if isinstance(echo, dict) and echo.get("echo") == text:
            return echo.get("instance")
        if answer == text:
            return None
        raise StepFailed(f"sent {text!r}, got back {answer!r}")

    def _ws_pinned(self):
        victim = self.settings.victim
        session, instance = self._ws_open(victim)
        self._sessions["pinned"] = session
        self._ws_results["pinned"] = {"instance": instance}
        if instance != victim:
            raise StepFailed(f"cookie {self.settings.cookie_name}={victim} but the welcome came from {instance}")
        echoed_by = self._ws_echo(session, "failover-before-kill")
        if echoed_by not in (None, victim):
            raise StepFailed(f"welcome from {victim} but the echo from {echoed_by}")
        return f"cookie {self.settings.cookie_name}={victim} → welcome from {instance}, echo ok"

    def _ws_closed(self):
        session = self._sessions["pinned"]
        started = self.clock()
        how = wait_closed(session, self.settings.ws_timeout, self.clock)
        waited = self.clock() - started
        self._ws_results["closed"] = {"closed": how is not None, "how": how, "seconds_after_down": round(waited, 3)}
        if how is None:
            raise StepFailed(f"session to {self.settings.victim} still open {self.settings.ws_timeout:g}s after DOWN")
        return f"closed ({how}) {waited:.2f}s after DOWN was seen ({self._rel(self.clock()):.2f}s after t0)"

    def _ws_rebalanced(self):
        victim = self.settings.victim
        cookie = self.settings.cookie_name
        session, instance = self._ws_open(victim)
        self._sessions["rebalanced"] = session
        new_cookie = session_cookie(session, cookie)
        self._ws_results["rebalanced"] = {"instance": instance, "set_cookie": new_cookie}
        problems = []
        if instance not in self.others:
            problems.append(f"old cookie {cookie}={victim} landed on {instance}, not on {', '.join(self.others)}")
        if new_cookie != instance:
            problems.append(f"Set-Cookie {cookie}={new_cookie} does not name the new backend {instance}")
        if problems:
            raise StepFailed("; ".join(problems))
        self._ws_echo(session, "failover-rebalanced")
        return f"old cookie {cookie}={victim} → {instance}, Set-Cookie {cookie}={new_cookie}, echo ok"

    def _ws_stays(self):
        cookie = self.settings.cookie_name
        session = self._sessions["rebalanced"]
        instance = self._ws_results["rebalanced"]["instance"]
        echoed_by = self._ws_echo(session, "failover-after-recovery")
        fresh, fresh_instance = self._ws_open(instance)
        fresh.close()
        self._ws_results["stays"] = {"echoed_by": echoed_by, "new_session_instance": fresh_instance}
        if echoed_by not in (None, instance):
            raise StepFailed(f"the session opened on {instance} now echoes from {echoed_by}")
        if fresh_instance != instance:
            raise StepFailed(f"session on {instance} still echoes, but a new one with {cookie}={instance} "
                             f"landed on {fresh_instance}")
        return f"session on {instance} still echoes after UP; a new one with {cookie}={instance} lands on {fresh_instance}"


MAX_MESSAGES_BEFORE_CLOSE = 100  # a chatty server cannot keep wait_closed reading forever


def wait_closed(session, timeout: float, clock: Callable[[], float] = time.monotonic) -> str | None:
    """Wait up to ``timeout`` for the server to end ``session``: how it ended, or None if still open."""
    deadline = clock() + timeout
    for _ in range(MAX_MESSAGES_BEFORE_CLOSE):
        remaining = deadline - clock()
        if remaining <= 0:
            return None
        try:
            session.recv_text(timeout=remaining)  # a message is not a close: keep waiting
        except WebSocketClosed as exc:
            return str(exc)
        except TimeoutError:
            return None
    return None


def session_cookie(session, name: str) -> str | None:
    """The value the handshake response set for cookie ``name``."""
    return set_cookie_value([("Set-Cookie", value) for value in session.cookies], name)

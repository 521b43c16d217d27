"""WebSocket checks: pinned by the SERVERID cookie, closed at the kill, rebalanced, kept after UP.

Sessions come from ``self.ws_connect(path, cookie)``: in real runs the load engine's
``loadtest.facade.open_session`` (the ``websockets`` library), whose session has
``greeting``, ``cookie(name)``, ``echo(text, timeout)``, ``wait_closed(timeout)`` and ``close()``.
"""

from __future__ import annotations

from .checks import StepFailed


class WebSocketChecks:
    """Sessions through ``ws_connect(path, cookie)`` carrying the cookie, for one ``FailoverTest``."""

    def __init__(self, test, ws_connect):
        self.test = test
        self.ws_connect = ws_connect
        self.sessions: dict = {}  # kept across steps: "pinned", "rebalanced"
        self.results: dict = {}

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()

    def _ws_open(self, server_cookie: str):
        """A session through the LB carrying ``SERVERID=<server_cookie>``; returns (session, greeting's instance)."""
        session = self.ws_connect(self.test.settings.ws_path, f"{self.test.settings.cookie_name}={server_cookie}")
        return session, str(session.greeting.get("instance"))

    def _ws_echo(self, session, text: str) -> str | None:
        """Send ``text``, expect it back; the instance the echo names."""
        try:
            return session.echo(text, timeout=self.test.settings.ws_timeout).get("instance")
        except ValueError as exc:  # an answer that is not the echo of ``text``
            raise StepFailed(str(exc)) from None

    def pinned(self):
        victim = self.test.settings.victim
        session, instance = self._ws_open(victim)
        self.sessions["pinned"] = session
        self.results["pinned"] = {"instance": instance}
        if instance != victim:
            raise StepFailed(f"cookie {self.test.settings.cookie_name}={victim} but the welcome came from {instance}")
        echoed_by = self._ws_echo(session, "failover-before-kill")
        if echoed_by not in (None, victim):
            raise StepFailed(f"welcome from {victim} but the echo from {echoed_by}")
        return f"cookie {self.test.settings.cookie_name}={victim} → welcome from {instance}, echo ok"

    def closed(self):
        session = self.sessions["pinned"]
        started = self.test.clock()
        how = session.wait_closed(self.test.settings.ws_timeout)
        waited = self.test.clock() - started
        self.results["closed"] = {"closed": how is not None, "how": how, "seconds_after_down": round(waited, 3)}
        if how is None:
            raise StepFailed(f"session to {self.test.settings.victim} still open {self.test.settings.ws_timeout:g}s after DOWN")
        return f"closed ({how}) {waited:.2f}s after DOWN was seen ({self.test.marks.rel(self.test.clock()):.2f}s after t0)"

    def rebalanced(self):
        victim = self.test.settings.victim
        cookie = self.test.settings.cookie_name
        session, instance = self._ws_open(victim)
        self.sessions["rebalanced"] = session
        new_cookie = session.cookie(cookie)
        self.results["rebalanced"] = {"instance": instance, "set_cookie": new_cookie}
        problems = []
        if instance not in self.test.pool.others:
            problems.append(f"old cookie {cookie}={victim} landed on {instance}, not on {', '.join(self.test.pool.others)}")
        if new_cookie != instance:
            problems.append(f"Set-Cookie {cookie}={new_cookie} does not name the new backend {instance}")
        if problems:
            raise StepFailed("; ".join(problems))
        self._ws_echo(session, "failover-rebalanced")
        self.results["rebalanced"]["seconds_after_t0"] = self.test.marks.rel(self.test.clock())
        return f"old cookie {cookie}={victim} → {instance}, Set-Cookie {cookie}={new_cookie}, echo ok " \
               f"({self.test.marks.rel(self.test.clock()):.2f}s after t0)"

    def stays(self):
        cookie = self.test.settings.cookie_name
        session = self.sessions["rebalanced"]
        instance = self.results["rebalanced"]["instance"]
        echoed_by = self._ws_echo(session, "failover-after-recovery")
        fresh, fresh_instance = self._ws_open(instance)
        fresh.close()
        self.results["stays"] = {"echoed_by": echoed_by, "new_session_instance": fresh_instance}
        if echoed_by not in (None, instance):
            raise StepFailed(f"the session opened on {instance} now echoes from {echoed_by}")
        if fresh_instance != instance:
            raise StepFailed(f"session on {instance} still echoes, but a new one with {cookie}={instance} "
                             f"landed on {fresh_instance}")
        return f"session on {instance} still echoes after UP; a new one with {cookie}={instance} lands on {fresh_instance}"

"""WebSocket checks: pinned by the SERVERID cookie, closed at the kill, rebalanced, kept after UP.

Sessions come from ``self.ws_connect(path, cookie)``: in real runs the load engine's
``loadtest.facade.open_session`` (the ``websockets`` library), whose session has
``greeting``, ``cookie(name)``, ``echo(text, timeout)``, ``wait_closed(timeout)`` and ``close()``.
"""

from __future__ import annotations

from .checks import StepFailed


class WebSocketChecks:
    """Mixin of FailoverTest: sessions through ``self.ws_connect`` carrying the cookie."""

    def _ws_open(self, server_cookie: str):
        """A session through the LB carrying ``SERVERID=<server_cookie>``; returns (session, greeting's instance)."""
        session = self.ws_connect(self.settings.ws_path, f"{self.settings.cookie_name}={server_cookie}")
        return session, str(session.greeting.get("instance"))

    def _ws_echo(self, session, text: str) -> str | None:
        """Send ``text``, expect it back; the instance the echo names."""
        try:
            return session.echo(text, timeout=self.settings.ws_timeout).get("instance")
        except ValueError as exc:  # an answer that is not the echo of ``text``
            raise StepFailed(str(exc)) from None

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
        how = session.wait_closed(self.settings.ws_timeout)
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
        new_cookie = session.cookie(cookie)
        self._ws_results["rebalanced"] = {"instance": instance, "set_cookie": new_cookie}
        problems = []
        if instance not in self.others:
            problems.append(f"old cookie {cookie}={victim} landed on {instance}, not on {', '.join(self.others)}")
        if new_cookie != instance:
            problems.append(f"Set-Cookie {cookie}={new_cookie} does not name the new backend {instance}")
        if problems:
            raise StepFailed("; ".join(problems))
        self._ws_echo(session, "failover-rebalanced")
        self._ws_results["rebalanced"]["seconds_after_t0"] = self._rel(self.clock())
        return f"old cookie {cookie}={victim} → {instance}, Set-Cookie {cookie}={new_cookie}, echo ok " \
               f"({self._rel(self.clock()):.2f}s after t0)"

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

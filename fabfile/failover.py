"""The failover test: kill one API backend behind HAProxy, show clients do not notice, bring it back.

The seed's sequence, each step timed and reported:

    0 pre-flight   every server of the pool is UP per HAProxy's runtime API
    1 baseline     5 GET /api/v1/health through the LB, all 200
    2 stop         the victim dies (``incus stop --force``, or its unit is killed)
    3 DOWN         HAProxy marks the victim DOWN within --down-timeout
    4 down window  5 GET through the LB, all 200 and none from the victim
    5 recovery     the victim is started again and HAProxy marks it UP within --up-timeout

plus optional checks around them: a WebSocket session pinned to the victim by
the SERVERID cookie (closed at the kill, rebalanced with a new cookie on
reconnect, still in place after recovery) and a continuous background load
whose failures are counted per phase (with the load on, the victim stays down
``down_dwell`` seconds after DOWN so the survivor carries traffic alone).

Whatever happens (a failed step, an exception, Ctrl-C) the victim is started
again and awaited before ``run`` returns. Every dependency (runtime API,
stopper, HTTP getter, WebSocket connector, load, clock) is injected, so the
sequence runs against fakes in unit tests.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from .loadgen import count_by_phase, set_cookie_value
from .polling import WaitTimeout, wait_until
from .transports import q
from .wsclient import WebSocketClosed

STOP_METHODS = ("incus", "unit")
PHASES = ("before_kill", "kill_to_down", "down_window", "recovery")
STOP_COMMAND_TIMEOUT = 120  # seconds for one incus stop/start (a container boot included)


class StepFailed(Exception):
    """A check did not hold; the message says what was seen."""

    def __init__(self, detail: str, data: dict | None = None):
        super().__init__(detail)
        self.data = data or {}


class StopperError(Exception):
    """Stopping or starting the victim failed."""


# -- stopping the victim -------------------------------------------------------

def _run_local(argv: list, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)


class IncusStopper:
    """The whole container dies at once, as a host crash would: ``incus stop --force``.

    Runs the incus CLI on this machine; an instance named ``remote:name``
    makes it address that remote.
    """

    method = "incus"

    def __init__(self, instance: str, run: Callable = _run_local):
        self.instance = instance
        self._run = run

    def stop_command(self) -> list:
        return ["incus", "stop", "--force", self.instance]

    def start_command(self) -> list:
        return ["incus", "start", self.instance]

    def _incus(self, argv: list, *, tolerate: str = "") -> None:
        try:
            done = self._run(argv, STOP_COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise StopperError(f"{' '.join(map(q, argv))}: no answer in {STOP_COMMAND_TIMEOUT}s") from None
        except FileNotFoundError:
            raise StopperError("incus CLI not found on this machine; use --stop-method unit") from None
        output = (done.stderr or done.stdout or "").strip()
        if done.returncode != 0 and not (tolerate and tolerate in output.lower()):
            raise StopperError(f"{' '.join(map(q, argv))}: exit {done.returncode}: {output.splitlines()[-1:] or ''}")

    def stop(self) -> None:
        self._incus(self.stop_command())

    def start(self) -> None:
        # Starting an instance that already runs is what we want, not an error.
        self._incus(self.start_command(), tolerate="already running")

    def describe(self, action: str) -> str:
        return " ".join(map(q, self.stop_command() if action == "stop" else self.start_command()))


class UnitStopper:
    """Only the service dies: SIGKILL (no graceful shutdown, like a crash), then ``systemctl stop``
    so that the unit's ``Restart=on-failure`` does not bring it back during the down window."""

    method = "unit"

    def __init__(self, transport, unit: str):
        self.transport = transport
        self.unit = unit

    def stop_command(self) -> str:
        unit = q(self.unit)
        return f"systemctl kill --signal=SIGKILL {unit}; systemctl stop {unit}"

    def start_command(self) -> str:
        return f"systemctl start {q(self.unit)}"

    def _systemctl(self, command: str) -> None:
        result = self.transport.run(command, warn=True, timeout=STOP_COMMAND_TIMEOUT)
        if not result.ok:
            raise StopperError(f"{self.transport.name}: {command}: exit {result.exited}: {result.tail(2)}")

    def stop(self) -> None:
        self._systemctl(self.stop_command())

    def start(self) -> None:
        self._systemctl(self.start_command())

    def describe(self, action: str) -> str:
        return f"{self.transport.name}: {self.stop_command() if action == 'stop' else self.start_command()}"


def make_stopper(method: str | None, transport, unit: str):
    """The stopper for ``--stop-method`` (default: incus for an incus-connected victim, else unit)."""
    instance = getattr(transport, "instance", None)
    method = method or ("incus" if instance else "unit")
    if method not in STOP_METHODS:
        raise ValueError(f"--stop-method {method!r}: use one of {', '.join(STOP_METHODS)}")
    if method == "incus":
        if not instance:
            raise ValueError(f"--stop-method incus: {transport.name} is not reached through incus; use --stop-method unit")
        return IncusStopper(instance)
    return UnitStopper(transport, unit)


# -- the sequence --------------------------------------------------------------

@dataclass
class FailoverSettings:
    victim: str
    pool: str = "api_pool"
    health_path: str = "/api/v1/health"
    ws_path: str = "/api/v1/ws"
    cookie_name: str = "SERVERID"
    checks_requests: int = 5  # GETs in steps 1 and 4, as the seed says
    down_timeout: float = 30.0
    up_timeout: float = 90.0
    down_target: float = 2.0  # the goal for detection under traffic; reported, not enforced
    poll_interval: float = 0.1  # one runtime API round trip is already ~50 ms
    settle_timeout: float = 15.0  # pre-flight waits this long for in-between states ("UP 1/3") to settle
    request_timeout: float = 2.0
    ws_timeout: float = 5.0  # for a welcome, an echo, or the close after the kill
    load_lead_in: float = 1.0  # traffic before the kill, so "before_kill" has samples
    load_tail: float = 2.0  # traffic after UP, to see the victim take requests again
    down_dwell: float = 3.0  # with load: the victim stays down this long after DOWN, so the survivor carries traffic alone
    websocket: bool = True
    load: bool = True


@dataclass
class StepOutcome:
    name: str
    status: str  # pass | fail | skip
    seconds: float
    detail: str
    data: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass
class PlannedStep:
    name: str
    action: Callable[[], object]
    abort_on_failure: bool = False  # later steps make no sense without this one
    needs: str | None = None  # an earlier step that must have passed


STEP_PREFLIGHT = "0 pre-flight: pool all UP"
STEP_BASELINE = "1 baseline GETs"
STEP_WS_PINNED = "ws: pinned to victim"
STEP_LOAD_FLOWING = "load: traffic flowing"
STEP_STOP = "2 stop victim"
STEP_DOWN = "3 HAProxy marks DOWN"
STEP_WS_CLOSED = "ws: closed at the kill"
STEP_WS_REBALANCED = "ws: reconnect rebalanced"
STEP_DOWN_WINDOW = "4 GETs while DOWN"
STEP_LOAD_DOWN = "load: survivor carries DOWN"
STEP_RECOVERY = "5 start victim, UP again"
STEP_WS_STAYS = "ws: stays after recovery"
STEP_LOAD_TOTAL = "load: no failed request"
STEP_RESTORE = "cleanup: victim restarted"
WS_STEPS = (STEP_WS_PINNED, STEP_WS_CLOSED, STEP_WS_REBALANCED, STEP_WS_STAYS)


def instance_counts(instances) -> str:
    """``backend-api-1 x3, backend-api-2 x2`` (unknown instances shown as ?)."""
    counts = {}
    for name in instances:
        counts[name or "?"] = counts.get(name or "?", 0) + 1
    return ", ".join(f"{name} x{count}" for name, count in sorted(counts.items())) or "none"


class FailoverTest:
    """One run of the sequence against injected dependencies; ``run()`` returns the report dict.

    ``runtime``: ``show_stat()`` -> ServerStat rows. ``stopper``: ``stop()``,
    ``start()``, ``describe(action)``. ``http_get(path, headers, timeout)`` ->
    HttpReply through the LB. ``ws_connect(path, headers)`` -> a session with
    ``recv_text(timeout)``, ``send_text``, ``close`` and its handshake's
    response headers. ``load``: a LoadGenerator (or None).
    """

    def __init__(self, settings: FailoverSettings, *, runtime, stopper, http_get: Callable,
                 ws_connect: Callable | None = None, load=None, output, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        self.runtime = runtime
        self.stopper = stopper
        self.http_get = http_get
        self.ws_connect = ws_connect
        self.load = load if settings.load else None
        self.output = output
        self.clock = clock
        self.sleep = sleep
        self.steps: list = []
        self.marks: dict = {}  # clock times: started, load_started, stop_issued, t0, down, start_issued, up
        self.transitions: dict = {}  # wait name -> [(clock time, HAProxy status)]
        self.others: list = []
        self.final_pool: list = []
        self.interrupted = False
        self._stop_issued = False
        self._victim_back = False
        self._sessions: dict = {}  # ws sessions kept across steps: "pinned", "rebalanced"
        self._ws_results: dict = {}

    # -- running ----------------------------------------------------------------
    def run(self) -> dict:
        """The whole sequence, then always the wind-down; returns the report."""
        self.marks["started"] = self.clock()
        v = self.settings.victim
        self.output.line(f"== test.failover: victim {v} in {self.settings.pool}, stop by {self.stopper.describe('stop')}")
        try:
            self._run_plan(self._plan())
        except KeyboardInterrupt:
            self.interrupted = True
            self.output.line("interrupted (Ctrl-C): bringing the victim back before exiting")
        self._wind_down()
        return self.report()

    def _plan(self) -> list:
        s = self.settings
        plan = [
            PlannedStep(STEP_PREFLIGHT, self._preflight, abort_on_failure=True),
            PlannedStep(STEP_BASELINE, self._baseline, abort_on_failure=True),
            PlannedStep(STEP_WS_PINNED, self._ws_pinned),
            PlannedStep(STEP_LOAD_FLOWING, self._load_flowing, abort_on_failure=True),
            PlannedStep(STEP_STOP, self._stop_victim, abort_on_failure=True),
            PlannedStep(STEP_DOWN, self._wait_down, abort_on_failure=True),
            PlannedStep(STEP_WS_CLOSED, self._ws_closed, needs=STEP_WS_PINNED),
            PlannedStep(STEP_WS_REBALANCED, self._ws_rebalanced),
            PlannedStep(STEP_DOWN_WINDOW, self._down_window),
            PlannedStep(STEP_LOAD_DOWN, self._load_while_down),
            PlannedStep(STEP_RECOVERY, self._start_and_wait_up, abort_on_failure=True),
            PlannedStep(STEP_WS_STAYS, self._ws_stays, needs=STEP_WS_REBALANCED),
        ]
        disabled = set(WS_STEPS if not (s.websocket and self.ws_connect) else ())
        if self.load is None:
            disabled.update((STEP_LOAD_FLOWING, STEP_LOAD_DOWN))
        return [step for step in plan if step.name not in disabled]

    def _run_plan(self, plan: list) -> None:
        for index, planned in enumerate(plan):
            if planned.needs and not self._passed(planned.needs):
                self._record(planned.name, "skip", 0.0, f"needs '{planned.needs}' to pass")
                continue
            try:
                passed = self._step(planned.name, planned.action)
            except KeyboardInterrupt:
                self._skip_rest(plan[index + 1:], "not run: interrupted")
                raise
            if not passed and planned.abort_on_failure:
                self._skip_rest(plan[index + 1:], f"not run: '{planned.name}' failed")
                return

    def _skip_rest(self, planned_steps: list, reason: str) -> None:
        for planned in planned_steps:
            self._record(planned.name, "skip", 0.0, reason)

    def _step(self, name: str, action: Callable) -> bool:
        """Run one check, print and record its outcome; True if it passed."""
        started = self.clock()
        try:
            result = action()
        except StepFailed as exc:
            self._record(name, "fail", self.clock() - started, str(exc), exc.data)
            return False
        except KeyboardInterrupt:
            self._record(name, "fail", self.clock() - started, "interrupted (Ctrl-C)")
            raise
        except Exception as exc:  # noqa: BLE001 - any surprise fails the step, and the wind-down still runs
            self._record(name, "fail", self.clock() - started, f"{type(exc).__name__}: {exc}")
            return False
        detail, data = result if isinstance(result, tuple) else (result, {})
        self._record(name, "pass", self.clock() - started, detail, data)
        return True

    def _record(self, name, status, seconds, detail, data=None) -> None:
        outcome = StepOutcome(name, status, round(seconds, 3), detail, data or {})
        self.steps.append(outcome)
        self.output.line(f"{status.upper():<4} {outcome.seconds:7.2f}s  {name:<28} {detail}".rstrip())

    def _passed(self, name: str) -> bool:
        return any(step.name == name and step.passed for step in self.steps)

    def _rel(self, when: float | None) -> float | None:
        """A clock time as seconds after t0 (or after the start, before any stop)."""
        if when is None:
            return None
        origin = self.marks.get("t0", self.marks.get("stop_issued", self.marks["started"]))
        return round(when - origin, 3)

    # -- HAProxy ------------------------------------------------------------------
    def _pool_rows(self) -> list:
        return [stat for stat in self.runtime.show_stat() if stat.pool == self.settings.pool]

    def _victim_stat(self):
        for stat in self._pool_rows():
            if stat.server == self.settings.victim:
                return stat
        raise StepFailed(f"{self.settings.victim} is no longer in {self.settings.pool}")

    def _wait_victim(self, label: str, done: Callable, timeout: float):
        """Poll the victim's HAProxy state until ``done(stat)``; remember every state change seen."""
        changes = self.transitions.setdefault(label, [])

        def probe():
            stat = self._victim_stat()
            if not changes or changes[-1][1] != stat.status:
                changes.append((self.clock(), stat.status))
            return stat

        try:
            return wait_until(probe, timeout=timeout, interval=self.settings.poll_interval, done=done,
                              clock=self.clock, sleep=self.sleep, what=f"{self.settings.victim} {label} in {self.settings.pool}")
        except WaitTimeout as exc:
            last = exc.last_value
            seen = f"last seen {last.status} (check {last.last_check or '-'})" if last is not None else "no state read"
            error = f"; last error: {exc.last_error}" if exc.last_error is not None else ""
            raise StepFailed(f"timed out after {timeout:g}s: {self.settings.victim} never {label} in "
                             f"{self.settings.pool}; {seen}{error}; states: {self._path(label)}") from None

    def _path(self, label: str) -> str:
        """``UP@-0.10 → UP 1/3@0.52 → DOWN@1.31`` (seconds after t0)."""
        return " → ".join(f"{status}@{self._rel(t):.2f}" for t, status in self.transitions.get(label, [])) or "-"

    # -- the steps ----------------------------------------------------------------
    def _settled_rows(self) -> list:
        """The pool's rows once no server is in an in-between state, waiting at most settle_timeout.

        A reload or a restart a moment ago leaves states such as "UP 1/3" for a few checks;
        those are "not yet", while DOWN and MAINT are final and are judged at once.
        """
        try:
            return wait_until(self._pool_rows, timeout=self.settings.settle_timeout, interval=0.25,
                              done=lambda rows: not any("/" in (stat.status or "") for stat in rows),
                              clock=self.clock, sleep=self.sleep, what=f"{self.settings.pool} states to settle").value
        except WaitTimeout as exc:
            return exc.last_value or []

    def _preflight(self):
        rows = self._settled_rows()
        victim = self.settings.victim
        pool = self.settings.pool
        if not rows:
            raise StepFailed(f"HAProxy has no servers in {pool}; run haproxy.setup; nothing was stopped")
        names = [stat.server for stat in rows]
        if victim not in names:
            raise StepFailed(f"{victim} is not a server of {pool} ({', '.join(names)}); nothing was stopped")
        self.others = [name for name in names if name != victim]
        if not self.others:
            raise StepFailed(f"{victim} is the only server of {pool}: stopping it would be an outage; nothing was stopped")
        states = ", ".join(f"{stat.server} {stat.status}" for stat in rows)
        not_up = [stat for stat in rows if not stat.is_up]
        if not_up:
            which = "; ".join(f"{stat.server} is {stat.status or '?'} (check {stat.last_check or '-'}"
                              f"{': ' + stat.last_check_detail if stat.last_check_detail else ''})"
                              for stat in not_up)
            raise StepFailed(f"{which} — the pool must be all UP first; nothing was stopped", {"pool": states})
        return f"{pool}: {states}", {"pool": states}

    def _gets(self, count: int) -> list:
        """``count`` GETs of the health path through the LB: [(HttpReply or None, error text)]."""
        replies = []
        for _ in range(count):
            try:
                replies.append((self.http_get(self.settings.health_path, None, self.settings.request_timeout), ""))
            except (OSError, ValueError) as exc:  # ValueError: http.client's bad status lines
                replies.append((None, f"{type(exc).__name__}: {exc}"))
        return replies

    def _check_gets(self, forbidden_instance: str | None = None):
        """Steps 1 and 4: every GET 200 (and, while DOWN, none served by the victim)."""
        replies = self._gets(self.settings.checks_requests)
        data = {"responses": [{"status": r.status if r else None, "instance": r.instance if r else None,
                               "seconds": round(r.seconds, 3) if r else None, "error": error}
                              for r, error in replies]}
        bad = []
        for number, (reply, error) in enumerate(replies, 1):
            if reply is None:
                bad.append(f"request {number}: no response ({error})")
            elif reply.status != 200:
                source = f" from {reply.instance}" if reply.instance else ""
                bad.append(f"request {number}: HTTP {reply.status}{source}: {reply.body[:120]!r}")
            elif forbidden_instance and reply.instance == forbidden_instance:
                bad.append(f"request {number}: served by {forbidden_instance}, which should be down")
        served = instance_counts(r.instance for r, _ in replies if r is not None)
        ok = len(replies) - len(bad)
        data.update(ok=ok, failed=len(bad))
        if bad:
            raise StepFailed(f"{ok}/{len(replies)} ok; " + "; ".join(bad), data)
        return f"{ok}/{len(replies)} HTTP 200, served by {served}", data

    def _baseline(self):
        return self._check_gets()

    def _down_window(self):
        return self._check_gets(forbidden_instance=self.settings.victim)

    def _stop_victim(self):
        self.marks["stop_issued"] = self.clock()
        # Set before the call: if it fails half-way (or Ctrl-C) the victim may be down, so restore it.
        self._stop_issued = True
        self.stopper.stop()
        self.marks["t0"] = self.clock()
        seconds = self.marks["t0"] - self.marks["stop_issued"]
        return f"{self.stopper.describe('stop')} returned after {seconds:.2f}s (t0)", {"command_seconds": round(seconds, 3)}

    def _wait_down(self):
        waited = self._wait_victim("DOWN", lambda stat: stat.is_down, self.settings.down_timeout)
        self.marks["down"] = self.clock()
        detect = self.marks["down"] - self.marks["t0"]
        # The target is judged from the moment the stop was issued: the victim may die early in the command.
        from_issue = self.marks["down"] - self.marks["stop_issued"]
        target = "met" if from_issue <= self.settings.down_target else "missed"
        detail = (f"DOWN {detect:.2f}s after t0, {from_issue:.2f}s after the stop was issued "
                  f"(target {self.settings.down_target:g}s {target}); "
                  f"check {waited.value.last_check or '-'}; states {self._path('DOWN')}")
        return (detail, {"detect_down_seconds": round(detect, 3), "from_stop_issued_seconds": round(from_issue, 3)})

    def _start_and_wait_up(self):
        self.marks["start_issued"] = self.clock()
        self.stopper.start()
        self._victim_back = True  # started: from here on the wind-down need not start it again
        self._wait_victim("UP", lambda stat: stat.is_up, self.settings.up_timeout)
        self.marks["up"] = self.clock()
        seconds = self.marks["up"] - self.marks["start_issued"]
        return f"{self.stopper.describe('start')}; UP {seconds:.2f}s later; states {self._path('UP')}", \
            {"recover_up_seconds": round(seconds, 3)}

    # -- WebSocket checks ---------------------------------------------------------
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

    # -- background load ------------------------------------------------------------
    def _load_flowing(self):
        self.marks["load_started"] = self.clock()
        self.load.start()
        self.sleep(self.settings.load_lead_in)
        samples = list(self.load.samples)
        failed = [sample for sample in samples if sample.failed]
        if not samples or failed:
            raise StepFailed(f"{len(samples)} requests in the first {self.settings.load_lead_in:g}s, "
                             f"{len(failed)} failed; fix the pool before killing a backend")
        return f"{len(samples)} requests in {self.settings.load_lead_in:g}s, all 200, served by " \
               f"{instance_counts(s.instance for s in samples)}"

    def _load_while_down(self):
        """Hold the victim down for ``down_dwell`` after DOWN; all that traffic must go to the others, fine."""
        remaining = self.marks["down"] + self.settings.down_dwell - self.clock()
        if remaining > 0:
            self.sleep(remaining)
        window = [sample for sample in list(self.load.samples) if sample.t >= self.marks["down"]]
        failed = [sample for sample in window if sample.failed]
        from_victim = [sample for sample in window if sample.instance == self.settings.victim]
        detail = (f"{len(window)} requests in {self.clock() - self.marks['down']:.1f}s after DOWN, {len(failed)} failed, "
                  f"served by {instance_counts(s.instance for s in window if not s.failed)}")
        if not window or failed or from_victim:
            raise StepFailed(detail)
        return detail

    def _phase_starts(self) -> list:
        m = self.marks
        return list(zip(PHASES, (m.get("load_started"), m.get("stop_issued"), m.get("down"), m.get("start_issued"))))

    def _load_total(self):
        samples = list(self.load.samples)
        phases = count_by_phase(samples, self._phase_starts())
        failed = sum(phase["failed"] for phase in phases.values())
        detail = f"{failed} of {len(samples)} requests failed; per phase: " + ", ".join(
            f"{name} {phase['failed']}/{phase['total']}" + (f" ({phase['timeouts']} timeouts)" if phase["timeouts"] else "")
            for name, phase in phases.items())
        if failed:
            raise StepFailed(detail)
        return detail

    # -- wind-down --------------------------------------------------------------------
    def _wind_down(self) -> None:
        """Victim back, load stopped and judged, sessions closed, final pool state shown."""
        try:
            if self._stop_issued and not self._victim_back:
                self._step(STEP_RESTORE, self._restore_victim)
        except KeyboardInterrupt:
            self.output.line(f"WARNING: interrupted again; {self.settings.victim} may still be stopped: "
                             f"run {self.stopper.describe('start')}")
            raise
        finally:
            self._stop_load()
        if self.load is not None and "load_started" in self.marks:
            self._step(STEP_LOAD_TOTAL, self._load_total)
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()
        self._show_final_pool()

    def _restore_victim(self):
        self.marks["start_issued"] = self.clock()
        self.stopper.start()
        self._victim_back = True
        self._wait_victim("UP", lambda stat: stat.is_up, self.settings.up_timeout)
        self.marks["up"] = self.clock()
        return f"{self.stopper.describe('start')}; UP {self.marks['up'] - self.marks['start_issued']:.2f}s later"

    def _stop_load(self) -> None:
        if self.load is None or "load_started" not in self.marks:
            return
        if "up" in self.marks and not self.interrupted:
            self.sleep(self.settings.load_tail)
        self.marks["load_stopped"] = self.clock()
        if not self.load.stop():
            self.output.line("warning: the load thread did not end in time; its last request is not counted")

    def _show_final_pool(self) -> None:
        try:
            rows = self._pool_rows()
        except Exception as exc:  # noqa: BLE001 - the report matters more than this line
            self.output.line(f"final {self.settings.pool}: cannot read HAProxy state: {exc}")
            return
        self.final_pool = [{"server": s.server, "status": s.status, "last_check": s.last_check} for s in rows]
        self.output.line(f"final {self.settings.pool}: " + ", ".join(
            f"{s.server} {s.status} ({s.last_check or '-'})" for s in rows))

    # -- report -----------------------------------------------------------------------
    @property
    def passed(self) -> bool:
        return not self.interrupted and bool(self.steps) and all(step.passed for step in self.steps)

    def _seconds_between(self, start: str, end: str) -> float | None:
        if start in self.marks and end in self.marks:
            return round(self.marks[end] - self.marks[start], 3)
        return None

    def report(self) -> dict:
        """Everything the run saw, as plain JSON-able data (times in seconds after t0)."""
        samples = sorted(self.load.samples, key=lambda sample: sample.t) if self.load is not None else []
        phases = count_by_phase(samples, self._phase_starts()) if samples else {}
        from_issue = self._seconds_between("stop_issued", "down")
        return {
            "passed": self.passed,
            "interrupted": self.interrupted,
            "victim": self.settings.victim,
            "pool": self.settings.pool,
            "others": self.others,
            "stop_method": self.stopper.method,
            "stop_command": self.stopper.describe("stop"),
            "steps": [asdict(step) | {"passed": step.passed} for step in self.steps],
            "detect_down_seconds": self._seconds_between("t0", "down"),
            "detect_down_from_stop_issued_seconds": from_issue,
            "down_target_seconds": self.settings.down_target,
            "down_target_met": from_issue is not None and from_issue <= self.settings.down_target,
            "recover_up_seconds": self._seconds_between("start_issued", "up"),
            "timeline": {name: self._rel(when) for name, when in self.marks.items()},
            "transitions": {label: [{"t": self._rel(t), "status": status} for t, status in changes]
                            for label, changes in self.transitions.items()},
            "requests": {
                "enabled": self.load is not None,
                "rate_per_second": getattr(self.load, "rate", None),
                "total": len(samples),
                "failed": sum(sample.failed for sample in samples),
                "timeouts": sum(sample.outcome == "timeout" for sample in samples),
                "non_200": sum(sample.outcome == "status" for sample in samples),
                "by_phase": phases,
                "samples": [{**asdict(sample), "t": self._rel(sample.t), "seconds": round(sample.seconds, 4)}
                            for sample in samples],
            },
            "websocket": self._websocket_report(),
            "final_pool": self.final_pool,
        }

    def _websocket_report(self) -> dict:
        outcomes = {step.name: {"status": step.status, "passed": step.passed, "detail": step.detail}
                    for step in self.steps if step.name in WS_STEPS}
        return {"enabled": bool(self.settings.websocket and self.ws_connect), "checks": outcomes,
                "seen": self._ws_results}


# -- WebSocket session helpers (fabfile/wsclient.py sessions) --------------------------

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

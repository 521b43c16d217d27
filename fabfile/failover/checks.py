"""What the failover sequence shares with its checks: step names and settings (the step types are ``engine``'s)."""

from __future__ import annotations

from dataclasses import dataclass

from .engine import PlannedStep, StepFailed, StepOutcome  # noqa: F401 - the checks raise and name these

PHASES = ("before_kill", "kill_to_down", "down_window", "recovery")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")  # replayable: HAProxy may retry them on another server


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
    post_every: int = 10  # with the load on, every Nth request is a POST (0: GETs only)
    post_path: str = "/api/v1/plays"  # the POST route (the stand-in records a play)
    ws_timeout: float = 5.0  # for a welcome, an echo, or the close after the kill
    load_lead_in: float = 1.0  # traffic before the kill, so "before_kill" has samples
    load_tail: float = 2.0  # traffic after UP, to see the victim take requests again
    down_dwell: float = 3.0  # with load: the victim stays down this long after DOWN, so the survivor carries traffic alone
    metrics_grace: float = 1.0  # the exporter must show DOWN this long after the runtime API did
    websocket: bool = True
    load: bool = True


STEP_PREFLIGHT = "0 pre-flight: pool all UP"
STEP_BASELINE = "1 baseline GETs"
STEP_WS_PINNED = "ws: pinned to victim"
STEP_LOAD_FLOWING = "load: traffic flowing"
STEP_METRICS_BEFORE = "prometheus: victim UP"
STEP_STOP = "2 stop victim"
STEP_DOWN = "3 HAProxy marks DOWN"
STEP_METRICS_DOWN = "prometheus: victim DOWN"
STEP_WS_CLOSED = "ws: closed at the kill"
STEP_WS_REBALANCED = "ws: reconnect rebalanced"
STEP_DOWN_WINDOW = "4 GETs while DOWN"
STEP_LOAD_DOWN = "load: survivor carries DOWN"
STEP_RECOVERY = "5 start victim, UP again"
STEP_WS_STAYS = "ws: stays after recovery"
STEP_LOAD_TOTAL = "load: no failed request"
# With a monitor host (monitoring/gate.py): the alert for the victim, read from Alertmanager.
STEP_ALERT_QUIET = "alert: not firing before"
STEP_ALERT_FIRED = "alert: fired after DOWN"
STEP_ALERT_RESOLVED = "alert: resolved after UP"
ALERT_STEPS = (STEP_ALERT_QUIET, STEP_ALERT_FIRED, STEP_ALERT_RESOLVED)
STEP_RESTORE = "cleanup: victim restarted"
METRICS_STEPS = (STEP_METRICS_BEFORE, STEP_METRICS_DOWN)
WS_STEPS = (STEP_WS_PINNED, STEP_WS_CLOSED, STEP_WS_REBALANCED, STEP_WS_STAYS)


def instance_counts(instances) -> str:
    """``backend-api-1 x3, backend-api-2 x2`` (unknown instances shown as ?)."""
    counts = {}
    for name in instances:
        counts[name or "?"] = counts.get(name or "?", 0) + 1
    return ", ".join(f"{name} x{count}" for name, count in sorted(counts.items())) or "none"

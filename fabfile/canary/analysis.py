"""One canary interval from HAProxy's own counters, and the canary's decision; pure (no I/O).

Counters come from ``show stat`` on every balancer (``snapshot``), each server's cumulative responses by
class (``hrsp_*``), response errors (``eresp``), requests (``req_tot``) and HAProxy's mean response time
(``rtime``). ``rtime`` is not a total: HAProxy keeps a sliding average over its last 512 samples
(``swrate_add``: sum ← sum − sum/512 + v, shown as sum/512, or sum/requests below 512). ``interval_mean``
inverts that to the mean of the requests of one interval alone, so an interval is judged on its own
requests, not on minutes of history. Figures of all balancers are summed (means weighted by requests).
"""

from __future__ import annotations

from dataclasses import dataclass, field

SAMPLES = 512  # HAProxy 2.x's TIME_STATS_SAMPLES: the window of its sliding averages
RESPONSE_CLASSES = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")


@dataclass(frozen=True)
class Counters:
    """One server on one balancer, as HAProxy counts it (cumulative since HAProxy's start)."""

    responses: int = 0
    errors: int = 0  # 5xx answers + responses cut short (eresp)
    requests: int = 0  # req_tot: the count behind rtime's window
    rtime_ms: float = 0.0
    status: str = ""
    check: str = ""


def _number(row: dict, key: str) -> int:
    text = (row.get(key) or "").strip()
    return int(text) if text.isdigit() else 0


def counters_of(raw: dict) -> Counters:
    """``show stat``'s columns of one server row as ``Counters``."""
    return Counters(
        responses=sum(_number(raw, key) for key in RESPONSE_CLASSES) + _number(raw, "eresp"),
        errors=_number(raw, "hrsp_5xx") + _number(raw, "eresp"),
        requests=_number(raw, "req_tot"),
        rtime_ms=float(_number(raw, "rtime")),
        status=(raw.get("status") or "").strip(),
        check=(raw.get("check_status") or "").strip(),
    )


def snapshot(per_balancer, pool: str) -> dict:
    """``{(balancer, server): Counters}`` of ``pool`` from ``[(balancer, [ServerStat])]``."""
    return {(balancer, stat.server): counters_of(stat.raw)
            for balancer, rows in per_balancer for stat in rows if stat.pool == pool}


def interval_mean(before: Counters, after: Counters, answered: int) -> tuple:
    """(mean, uncertainty) in ms of the ``answered`` requests between two reads of HAProxy's sliding average,
    (None, None) when there were none. With d = 1 − 1/512 and S = average × window, S_after = d^k S_before +
    Σ d^(k−i) v_i, so the interval's mean is (S_after − d^k S_before)(1 − d)/(1 − d^k). HAProxy shows whole
    milliseconds: each read may be 1 ms off, i.e. S by a window's worth, which the uncertainty carries
    (about 512/k ms once the window is full: a few requests cannot tell 1 ms from 50)."""
    if answered <= 0:
        return None, None
    decay = 1 - 1 / SAMPLES
    window_before = min(max(before.requests, 1), SAMPLES)
    window_after = min(max(after.requests, 1), SAMPLES)
    kept = decay ** answered
    scale = (1 - decay) / (1 - kept)
    mean = (after.rtime_ms * window_after - kept * before.rtime_ms * window_before) * scale
    return max(0.0, mean), (window_after + kept * window_before) * scale


@dataclass
class Figures:
    """One group of servers (the canaries, or the stable ones) over one interval, every balancer summed."""

    requests: int = 0
    errors: int = 0
    mean_ms: float | None = None
    uncertainty_ms: float = 0.0  # how far off ``mean_ms`` may be from HAProxy's whole-millisecond averages

    @property
    def error_share(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict:
        return {"requests": self.requests, "errors_5xx": self.errors, "share_5xx": round(self.error_share, 4),
                "mean_ms": None if self.mean_ms is None else round(self.mean_ms, 1)}


class CountersRestarted(Exception):
    """A counter went down between two reads: that balancer's HAProxy restarted (a reload resets them)."""


def figures(before: dict, after: dict, servers) -> Figures:
    """The ``servers``' figures between two snapshots, summed over the balancers both reads saw."""
    total = Figures()
    weighted = spread = 0.0
    timed = 0
    for key, now in after.items():
        if key[1] not in servers or key not in before:
            continue
        then = before[key]
        answered = now.responses - then.responses
        if answered < 0 or now.errors < then.errors:
            raise CountersRestarted(f"{key[0]}: {key[1]}'s counters went down (HAProxy restarted or reloaded)")
        total.requests += answered
        total.errors += now.errors - then.errors
        mean, uncertainty = interval_mean(then, now, answered)
        if mean is not None:
            weighted += mean * answered
            spread += uncertainty * answered
            timed += answered
    total.mean_ms = weighted / timed if timed else None
    total.uncertainty_ms = spread / timed if timed else 0.0
    return total


PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


@dataclass
class Interval:
    """One analysis: what was asked (``step``, percent), what HAProxy counted, the verdict and why."""

    number: int
    step: float
    seconds: float
    canary: Figures
    stable: Figures
    verdict: str = PASS
    reasons: list = field(default_factory=list)
    hard: bool = False  # a failure no further interval can undo (the process is not the one deployed)
    at: float = 0.0  # seconds since the canary took traffic, at the end of this interval

    @property
    def share(self) -> float:
        """The canaries' share of the pool's requests in this interval."""
        total = self.canary.requests + self.stable.requests
        return self.canary.requests / total if total else 0.0

    def line(self, mode: str) -> str:
        """The one line printed for this interval."""
        def ms(value):
            return "-" if value is None else f"{value:.0f}ms"

        what = "of tracks' requests" if mode == "keys" else "of requests"
        why = f": {'; '.join(self.reasons)}" if self.reasons else ""
        return (f"canary interval {self.number} step {self.step:g}% {self.verdict.upper()}{why} | canary "
                f"{self.canary.requests} req {self.canary.error_share:.1%} 5xx mean {ms(self.canary.mean_ms)}, stable "
                f"{self.stable.requests} req {self.stable.error_share:.1%} 5xx mean {ms(self.stable.mean_ms)}, "
                f"canary took {self.share:.1%} {what}")

    def to_dict(self) -> dict:
        return {"interval": self.number, "step": self.step, "seconds": round(self.seconds, 2), "at": round(self.at, 2),
                "verdict": self.verdict, "reasons": list(self.reasons), "share": round(self.share, 4),
                "canary": self.canary.to_dict(), "stable": self.stable.to_dict()}


def judge(interval: Interval, plan, canary_states: dict, identity_problem: str | None) -> Interval:
    """Set ``interval``'s verdict. Fail: the process is not the one deployed (hard), a canary not UP in
    HAProxy, 5xx share above the stable servers' by more than ``max_5xx`` points, or a mean response time
    more than ``max_slowdown`` % above theirs and by more than ``latency_floor_ms`` plus both means'
    uncertainty (so a handful of requests never fails a good canary on rounding). Inconclusive: fewer than
    ``min_requests`` canary requests (and nothing failed). Pass otherwise."""
    reasons = []
    if identity_problem:
        interval.hard = True
        reasons.append(identity_problem)
    down = sorted(f"{name} {status}" for name, status in canary_states.items() if status != "UP")
    if down:
        reasons.append(f"check state {', '.join(down)}")
    canary, stable = interval.canary, interval.stable
    if canary.requests and canary.error_share - stable.error_share > plan.max_5xx / 100:
        reasons.append(f"5xx {canary.error_share:.1%} vs stable {stable.error_share:.1%} "
                       f"(limit +{plan.max_5xx:g} points)")
    if canary.mean_ms is not None and stable.mean_ms is not None:
        slower = canary.mean_ms - stable.mean_ms
        margin = plan.latency_floor_ms + canary.uncertainty_ms + stable.uncertainty_ms
        if slower > margin and canary.mean_ms > stable.mean_ms * (1 + plan.max_slowdown / 100):
            ratio = f"+{slower / stable.mean_ms:.0%}" if stable.mean_ms else f"+{slower:.0f}ms"
            reasons.append(f"mean {canary.mean_ms:.0f}ms vs stable {stable.mean_ms:.0f}ms ({ratio}, limit "
                           f"+{plan.max_slowdown:g}%)")
    if reasons:
        interval.verdict, interval.reasons = FAIL, reasons
    elif canary.requests < plan.min_requests:
        interval.verdict = INCONCLUSIVE
        interval.reasons = [f"{canary.requests} canary requests < {plan.min_requests} (--canary-min-requests): hold"]
    else:
        interval.verdict = PASS
    return interval


NEXT, HOLD, PROMOTE, ABORT = "next-step", "hold", "promote", "abort"


class Decision:
    """The canary's course through its steps, interval by interval: a pass moves to the next step (after
    the last: promote), a fail holds the step and ``checks`` fails abort (a hard fail at once), an
    inconclusive interval holds, ``inconclusive_limit`` of them in a row abort; one that ends within the
    canary's slowstart ramp (``plan.ramp`` seconds after it took traffic) holds without counting."""

    def __init__(self, plan):
        self.plan = plan
        self.step_index = 0
        self.failed = 0
        self.inconclusive_run = 0
        self.reason = ""

    @property
    def step(self) -> float:
        return self.plan.steps[self.step_index]

    def after(self, interval: Interval) -> str:
        if interval.verdict == FAIL:
            self.failed += 1
            self.inconclusive_run = 0
            if interval.hard or self.failed >= self.plan.checks:
                self.reason = "; ".join(interval.reasons) + (
                    "" if interval.hard else f" ({self.failed} failed interval(s), --canary-checks {self.plan.checks})")
                return ABORT
            return HOLD
        if interval.verdict == INCONCLUSIVE and interval.at < self.plan.ramp:
            interval.reasons.append(f"within HAProxy's {self.plan.ramp:g}s slowstart ramp: not counted toward the abort")
            return HOLD
        if interval.verdict == INCONCLUSIVE:
            self.inconclusive_run += 1
            if self.inconclusive_run >= self.plan.inconclusive_limit:
                self.reason = (f"{self.inconclusive_run} inconclusive intervals in a row: not enough traffic to judge "
                               f"(raise the load, lengthen --canary-interval or lower --canary-min-requests)")
                return ABORT
            return HOLD
        self.inconclusive_run = 0
        if self.step_index + 1 >= len(self.plan.steps):
            return PROMOTE
        self.step_index += 1
        return NEXT


def exposed_share(intervals) -> float:
    """Share of the pool's requests the canaries answered over the whole canary."""
    canary = sum(i.canary.requests for i in intervals)
    total = canary + sum(i.stable.requests for i in intervals)
    return canary / total if total else 0.0


__all__ = ["Counters", "CountersRestarted", "Decision", "Figures", "Interval", "exposed_share", "figures",
           "interval_mean", "judge", "snapshot"]

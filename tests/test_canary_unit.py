"""Canary deploys without a lab: the plan's checks, the weights of a share, what a weight moves per balance
algorithm, the inversion of HAProxy's sliding average, verdicts and the decision, and the orchestration's
abort / promote / interrupt paths against a fake runtime (weights restored in each)."""

import random

import pytest

from fabfile.canary.analysis import (ABORT, FAIL, HOLD, INCONCLUSIVE, NEXT, PASS, PROMOTE, SAMPLES, Counters,
                                     CountersRestarted, Decision, Figures, Interval, counters_of, exposed_share,
                                     figures, interval_mean, judge)
from fabfile.canary.plan import CanaryPlan, canary_plan, parse_steps, share_of, weight_mode, weights_for_share
from fabfile.canary.run import Canary
from fabfile.haproxy_runtime import ServerStat
from fabfile.values import InvalidValue
from fakes import Clock
from test_deploy_unit import Lines


# --- plan ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("share, canaries, stables, expected", [
    (0.10, 1, 1, (1, 9)), (0.25, 1, 1, (1, 3)), (0.50, 1, 1, (1, 1)), (0.05, 1, 1, (1, 19)),
    (0.25, 1, 3, (1, 1)), (0.10, 2, 10, (5, 9)), (0.90, 1, 1, (9, 1)), (0.01, 1, 1, (1, 99)),
])
def test_weights_give_the_share_with_the_smallest_weights(share, canaries, stables, expected):
    assert weights_for_share(share, canaries, stables) == expected
    assert share_of(*expected, canaries, stables) == pytest.approx(share, abs=1e-9)


@pytest.mark.parametrize("share, canaries, stables", [(0.333, 1, 1), (0.07, 3, 11), (0.6, 2, 7), (0.004, 1, 1)])
def test_weights_stay_in_haproxys_range_and_come_close(share, canaries, stables):
    canary, stable = weights_for_share(share, canaries, stables)
    assert 1 <= canary <= 256 and 1 <= stable <= 256
    assert abs(share_of(canary, stable, canaries, stables) - share) < 0.002


@pytest.mark.parametrize("balance, hash_type, mode", [
    ("roundrobin", None, "requests"), ("leastconn", None, "requests"), ("random", None, "requests"),
    ("random(2)", None, "requests"), ("static-rr", None, "static"), ("first", None, "static"),
    ("uri path-only depth 2", "consistent", "keys"), ("uri path-only depth 2", "map-based", "static"),
    ("source", None, "static"), ("hdr(host)", "consistent", "keys"), ("url_param track", None, "static"),
])
def test_what_a_weight_moves(balance, hash_type, mode):
    assert weight_mode(balance, hash_type) == mode


def test_plan_defaults_and_abort_bound():
    plan = canary_plan(targets=2, pool_size=2)
    assert plan == CanaryPlan() and plan.abort_bound == 90
    assert parse_steps("5, 20%,60") == (5, 20, 60)


@pytest.mark.parametrize("flags, needle", [
    ({"steps": "10,5"}, "increase"), ({"steps": "0,50"}, "above 0"), ({"steps": "50,100"}, "below 100"),
    ({"steps": "ten"}, "percentages"), ({"interval": "0.2"}, "--canary-interval"), ({"checks": "0"}, "--canary-checks"),
    ({"max_5xx": "-1"}, "--canary-max-5xx"), ({"max_slowdown": "fast"}, "--canary-max-slowdown"),
    ({"min_requests": "0"}, "--canary-min-requests"), ({"count": "2"}, "stable server"),
])
def test_bad_flags_are_one_line(flags, needle):
    with pytest.raises(InvalidValue) as refused:
        canary_plan(**flags, targets=2, pool_size=2)
    assert needle in str(refused.value) and "\n" not in str(refused.value)


# --- HAProxy's sliding average ------------------------------------------------------------------

def simulate(values, total=0, sum_=0):
    """HAProxy's swrate_add and the shown average (whole ms, rounded up, window min(requests, 512))."""
    for value in values:
        sum_ = sum_ - (sum_ + SAMPLES - 1) // SAMPLES + value
        total += 1
    window = min(total, SAMPLES)
    return total, sum_, (sum_ + window - 1) // window if window else 0


@pytest.mark.parametrize("history, interval, mean", [
    (3000, 50, 300), (3000, 50, 2), (20, 30, 40), (5000, 400, 11), (0, 25, 7),
])
def test_interval_mean_recovers_the_intervals_own_mean_within_its_uncertainty(history, interval, mean):
    rng = random.Random(history + interval)
    total, sum_, shown = simulate([rng.choice((1, 2, 3)) for _ in range(history)])
    before = Counters(requests=total, rtime_ms=shown)
    values = [max(0, mean + rng.choice((-1, 0, 1))) for _ in range(interval)]
    total, sum_, shown = simulate(values, total, sum_)
    got, uncertainty = interval_mean(before, Counters(requests=total, rtime_ms=shown), interval)
    assert abs(got - sum(values) / len(values)) <= uncertainty + 0.5
    assert interval_mean(before, before, 0) == (None, None)


def test_counters_of_a_show_stat_row():
    raw = {"hrsp_2xx": "90", "hrsp_4xx": "2", "hrsp_5xx": "7", "eresp": "1", "req_tot": "100", "rtime": "12",
           "status": "UP", "check_status": "L7OK"}
    assert counters_of(raw) == Counters(responses=100, errors=8, requests=100, rtime_ms=12, status="UP", check="L7OK")


def test_figures_sum_balancers_and_a_restart_is_seen():
    before = {("lb1", "c"): Counters(10, 0, 10, 2), ("lb2", "c"): Counters(0, 0, 0, 0), ("lb1", "s"): Counters(50, 1, 50, 2)}
    after = {("lb1", "c"): Counters(30, 4, 30, 2), ("lb2", "c"): Counters(10, 1, 10, 2), ("lb1", "s"): Counters(150, 1, 150, 2)}
    canary = figures(before, after, ["c"])
    assert (canary.requests, canary.errors) == (30, 5)
    assert figures(before, after, ["s"]).requests == 100
    with pytest.raises(CountersRestarted):
        figures(after, before, ["c"])


# --- verdicts and the decision ------------------------------------------------------------------

PLAN = CanaryPlan(steps=(10, 50), interval=5, checks=2, max_5xx=1, max_slowdown=50, min_requests=20)


def interval(canary_requests=100, canary_errors=0, canary_ms=2.0, stable_requests=900, stable_errors=0, stable_ms=2.0):
    return Interval(1, 10, 5, Figures(canary_requests, canary_errors, canary_ms, 1.0),
                    Figures(stable_requests, stable_errors, stable_ms, 0.2))


@pytest.mark.parametrize("case, states, identity, verdict, needle", [
    (interval(), {"c": "UP"}, None, PASS, ""),
    (interval(canary_errors=20), {"c": "UP"}, None, FAIL, "5xx 20.0% vs stable 0.0%"),
    (interval(canary_errors=20, stable_errors=180), {"c": "UP"}, None, PASS, ""),  # the whole pool fails alike
    (interval(canary_ms=302), {"c": "UP"}, None, FAIL, "mean 302ms vs stable 2ms"),
    (interval(canary_ms=7), {"c": "UP"}, None, PASS, ""),  # 250 % slower but within floor + uncertainty
    (interval(canary_requests=5), {"c": "UP"}, None, INCONCLUSIVE, "5 canary requests < 20"),
    (interval(canary_requests=5, canary_errors=5), {"c": "UP"}, None, FAIL, "5xx 100.0%"),
    (interval(), {"c": "DOWN"}, None, FAIL, "check state c DOWN"),
    (interval(), {"c": "UP"}, "c's main process changed", FAIL, "main process changed"),
])
def test_verdicts(case, states, identity, verdict, needle):
    judged = judge(case, PLAN, states, identity)
    assert judged.verdict == verdict
    assert needle in "; ".join(judged.reasons)
    assert judged.hard == bool(identity)
    assert judged.line("requests").startswith(f"canary interval 1 step 10% {verdict.upper()}")


def verdicts(*names, hard=False):
    out = []
    for name in names:
        one = interval()
        one.verdict, one.hard, one.reasons = name, hard and name == FAIL, [name]
        out.append(one)
    return out


@pytest.mark.parametrize("course, actions", [
    ((PASS, PASS), [NEXT, PROMOTE]),
    ((FAIL, FAIL), [HOLD, ABORT]),
    ((FAIL, PASS, PASS), [HOLD, NEXT, PROMOTE]),
    ((PASS, FAIL, PASS), [NEXT, HOLD, PROMOTE]),
    ((INCONCLUSIVE, INCONCLUSIVE, INCONCLUSIVE), [HOLD, HOLD, ABORT]),
    ((INCONCLUSIVE, INCONCLUSIVE, PASS, INCONCLUSIVE, PASS), [HOLD, HOLD, NEXT, HOLD, PROMOTE]),
])
def test_decision_course(course, actions):
    decision = Decision(PLAN)
    assert [decision.after(i) for i in verdicts(*course)] == actions


def test_too_few_requests_during_the_slowstart_ramp_do_not_count_toward_the_abort():
    """HAProxy ramps a canary back in rotation up to its weight over slowstart: intervals ending within it
    hold without counting; once past it, the usual limit of inconclusive intervals in a row aborts."""
    plan = CanaryPlan(steps=(10, 50), interval=5, checks=2, min_requests=20, ramp=30)
    decision = Decision(plan)
    course = verdicts(*[INCONCLUSIVE] * 8)
    for number, one in enumerate(course, 1):
        one.at = 5.0 * number
    actions = [decision.after(one) for one in course]
    assert actions == [HOLD] * 7 + [ABORT]  # 5 ending within the 30 s ramp, then 3 in a row from its end
    assert "slowstart ramp" in course[0].reasons[-1] and "slowstart" not in "; ".join(course[5].reasons)
    assert Decision(CanaryPlan(steps=(10, 50), ramp=30)).after(verdicts(FAIL, hard=True)[0]) == ABORT


def test_a_hard_failure_aborts_at_once():
    decision = Decision(PLAN)
    assert decision.after(verdicts(FAIL, hard=True)[0]) == ABORT


def test_exposed_share_is_the_canarys_share_of_every_interval():
    assert exposed_share([interval(100, stable_requests=900), interval(300, stable_requests=700)]) == 0.2
    assert exposed_share([]) == 0.0


# --- orchestration against a fake runtime -------------------------------------------------------

class FakeRuntime:
    """Two balancers' worth of one pool: each read serves ``rate`` more requests, split by the weights set;
    the canary answers ``canary_errors`` of its own with 5xx."""

    def __init__(self, canary_errors=0.0, rate=1000):
        self.weights_now = {"c": 1, "s": 1}
        self.set_calls = []
        self.rate, self.canary_errors = rate, canary_errors
        self.served = {"c": [0, 0], "s": [0, 0]}

    def _rows(self):
        total = sum(self.weights_now.values()) or 1
        for name in ("c", "s"):
            got = self.rate * self.weights_now[name] // total
            self.served[name][0] += got
            self.served[name][1] += int(got * (self.canary_errors if name == "c" else 0))
        return [ServerStat("pool", name, "UP", self.weights_now[name], 0, "L7OK",
                           raw={"hrsp_2xx": str(done - errors), "hrsp_5xx": str(errors), "req_tot": str(done),
                                "rtime": "2", "status": "UP"})
                for name, (done, errors) in self.served.items()]

    def show_stat(self):
        return self._rows()

    def per_balancer(self):
        return [("lb1", self._rows())]

    def weights(self, pool, servers):
        return [("lb1", {name: (self.weights_now[name], 1) for name in servers})]

    def set_weights(self, pool, weights):
        self.set_calls.append(dict(weights))
        self.weights_now.update(weights)


class FakeInstance:
    def __init__(self, name="c"):
        self.name, self.sha256, self.pid = name, "old", "100"

    def soak_probe(self):
        return self.pid, "200"

    def facts(self):
        return {"sha256": self.sha256}


class FakeRollout:
    def __init__(self, instance, log):
        self.instance, self.log, self.outcomes, self.failed = instance, log, [], False

    def run(self, artifact, facts, force):
        self.log.append("deploy" if artifact else "rollback")
        self.instance.sha256 = artifact.sha256 if artifact else "old"
        self.instance.pid = str(int(self.instance.pid) + 1)


class Artifact:
    sha256 = "new"


def canary_run(runtime, instance=None, on_sleep=None, plan=PLAN):
    instance = instance or FakeInstance()
    clock, log = Clock(start=0.0), []

    def sleep(seconds):
        clock.sleep(seconds)
        if on_sleep:
            on_sleep(clock.now, instance)

    canary = Canary(plan, "requests", [instance], runtime, "pool", Lines(),
                    deploy_rollout=lambda names: FakeRollout(instance, log), clock=clock, sleep=sleep)
    return canary, log


def test_a_good_canary_is_promoted_through_its_steps_and_weights_come_back():
    runtime = FakeRuntime()
    canary, log = canary_run(runtime)
    assert canary.run(Artifact(), {"c": {}}) == "promoted"
    assert log == ["deploy"]
    assert runtime.set_calls == [{"c": 1, "s": 9}, {"c": 1, "s": 1}, {"c": 1, "s": 1}]  # 10 %, 50 %, restored
    report = canary.report()
    assert report["decision"] == "promoted" and [i["step"] for i in report["intervals"]] == [10, 50]
    assert report["seconds_to_decision"] == pytest.approx(10, abs=0.5)


def test_a_canary_with_5xx_is_aborted_rolled_back_and_weights_restored():
    runtime = FakeRuntime(canary_errors=0.2)
    canary, log = canary_run(runtime)
    assert canary.run(Artifact(), {"c": {}}) == "aborted"
    assert log == ["deploy", "rollback"]
    assert runtime.set_calls == [{"c": 1, "s": 9}, {"c": 0}, {"c": 1, "s": 1}]
    assert [i["verdict"] for i in canary.report()["intervals"]] == ["fail", "fail"]
    assert canary.report()["seconds_to_decision"] <= PLAN.abort_bound


def test_a_crash_aborts_within_a_second_without_waiting_for_the_interval():
    def crash(now, instance):
        if now >= 2:
            instance.pid = "999"

    canary, log = canary_run(FakeRuntime(), on_sleep=crash)
    assert canary.run(Artifact(), {"c": {}}) == "aborted"
    assert "main process changed" in canary.reason and canary.report()["seconds_to_decision"] <= 3.5
    assert log == ["deploy", "rollback"]


def test_an_interrupt_mid_canary_rolls_back_restores_weights_and_is_raised_again():
    def interrupt(now, instance):
        if now >= 6:
            raise KeyboardInterrupt("SIGTERM")

    runtime = FakeRuntime()
    canary, log = canary_run(runtime, on_sleep=interrupt)
    with pytest.raises(KeyboardInterrupt):
        canary.run(Artifact(), {"c": {}})
    assert log == ["deploy", "rollback"]
    assert runtime.set_calls[-2:] == [{"c": 0}, {"c": 1, "s": 1}]
    assert canary.decision == "interrupted"


def test_weights_a_reload_lost_are_set_again():
    runtime = FakeRuntime()

    def reload(now, instance):
        if 6 <= now < 6.2:
            runtime.weights_now.update({"c": 1, "s": 1})  # what a reload without the state file does

    canary, _ = canary_run(runtime, on_sleep=reload, plan=CanaryPlan(steps=(10, 25, 50), interval=5, min_requests=20))
    assert canary.run(Artifact(), {"c": {}}) == "promoted"
    assert any("lost the canary's weights" in line for line in canary.output.lines)
    assert runtime.set_calls[:4] == [{"c": 1, "s": 9}, {"c": 1, "s": 3}, {"c": 1, "s": 3}, {"c": 1, "s": 1}]


def test_the_plot_draws_intervals_without_requests_too():
    from fabfile.canary.plot import render_svg

    runtime = FakeRuntime()
    canary, _ = canary_run(runtime)
    canary.run(Artifact(), {"c": {}})
    report = canary.report()
    report["intervals"][0]["canary"]["mean_ms"] = None  # an interval in which the canary answered nothing
    svg = render_svg(report)
    assert svg.startswith("<svg") and "canary promoted" in svg and svg.count("<polyline") == 6

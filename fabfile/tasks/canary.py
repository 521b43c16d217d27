"""``--canary`` of api.deploy / stream.deploy: the flags, the checks before anything is touched, and the glue
between the rollout (``deploy/``) and the canary (``canary/``). Few lines in ``service.py`` call these."""

from __future__ import annotations

from . import support

CANARY_HELP = {
    "canary": "deploy one instance first (--canary-count N for more), give it a share of the traffic with runtime "
              "weights on every balancer, judge it against the stable servers from HAProxy's counters, then "
              "promote (the rest rolls as usual) or abort (canary back to its previous binary, exit 1)",
    "canary_steps": "the canary's share of requests, step by step, in percent (default 10,25,50)",
    "canary_interval": "seconds per analysis interval (default 30); one verdict line per interval",
    "canary_checks": "failed intervals that abort the canary (default 2)",
    "canary_max_5xx": "5xx share the canary may have above the stable servers', in percentage points (default 1)",
    "canary_max_slowdown": "percent by which the canary's mean response time may exceed the stable servers' (default 50)",
    "canary_min_requests": "fewer canary requests in an interval: inconclusive, the step holds; "
                           "deploy_canary_inconclusive_limit (3) in a row abort (default 20)",
    "canary_count": "instances deployed as canaries (default 1); at least one server of the pool stays stable",
    "plot": "with --canary: draw the steps against canary and stable 5xx share and latency as SVG at this path",
}

# Where each pool's balance algorithm lives in the inventory (the template renders no hash-type for api_pool,
# so a hash there is HAProxy's default map-based one).
BALANCE_VARIABLES = {"api_pool": ("haproxy_api_balance", None),
                     "stream_pool": ("haproxy_stream_balance", "haproxy_stream_hash_type")}


def plan_and_mode(config, topology, hosts, flags: dict):
    """The checked ``CanaryPlan`` and what a weight moves in the pool; a static pool is refused (exit 2)."""
    from ..canary.plan import canary_plan, weight_mode
    from ..roles.haproxy_vars import DEFAULTS, time_ms

    variables = hosts[0].vars_with(config.defaults)
    balancer_vars = topology.balancers[0].vars_with(DEFAULTS)
    plan = canary_plan(**flags, targets=len(hosts), pool_size=len(topology.inventory.group(config.group)),
                       variables=variables, ramp=time_ms(balancer_vars["haproxy_slowstart"]) / 1000)
    balance_var, hash_var = BALANCE_VARIABLES[config.pool]
    balance = balancer_vars[balance_var]
    hash_type = balancer_vars[hash_var] if hash_var else None
    mode = weight_mode(balance, hash_type)
    if mode == "static":
        from ..canary.plan import HASH_ALGORITHMS

        hashed = str(balance).split("(")[0].split()[0] in HASH_ALGORITHMS if str(balance).split() else False
        how = f"balance {balance}" + (f" with hash-type {hash_type or 'map-based'}" if hashed else "")
        raise support.UsageError(
            f"--canary: {config.pool} uses {how}, a static algorithm: HAProxy fixes its weights at start, so no "
            f"share can go to a canary; set {balance_var} to roundrobin, leastconn or random"
            f"{f' or {hash_var} to consistent' if hash_var else ''}, run inv haproxy.setup, or deploy without --canary")
    return plan, mode


def start(config, topology, hosts, rollout, plan, mode, facts, artifact, output, recorder):
    """The ``Canary`` over the first ``--canary-count`` targets that need the new binary (None: nothing to
    canary, every target already runs it)."""
    from ..canary.run import Canary
    from ..canary import state
    from ..deploy.locking import who
    from ..shell import RUN_ID
    from .service import rollout_for

    names = [i.name for i in rollout.instances if rollout.needs_work(i.name, facts, artifact)][:plan.count]
    if not names:
        return None
    by_name = {host.name: host for host in hosts}

    def deploy_rollout(chosen):
        canaries = rollout_for(config, topology.inventory, [by_name[n] for n in chosen], topology, output,
                               batch=len(chosen))
        canaries.context.audit = recorder
        canaries.pool_states = rollout.pool_states
        return canaries

    lock_host = topology.control_transport()

    def publish(current):
        if current.get("phase") == "done":
            lock_host.run(state.clear(config.pool), warn=True)
        else:
            lock_host.run(state.write({**current, "who": who(), "run": RUN_ID}), warn=True)

    notes = [f"HAProxy's slowstart ramps each canary up to its weight over its first {plan.ramp:g}s in rotation: "
             "intervals in that time see less than the step's share, and too few requests then does not count "
             "toward the abort"] if plan.ramp else []
    instances = [i for i in rollout.instances if i.name in names]
    return Canary(plan, mode, instances, rollout.runtime, config.pool, output, deploy_rollout=deploy_rollout,
                  audit=recorder, publish=publish, notes=notes)


def merge_outcomes(rollout, canary) -> None:
    """The rollout's outcomes with each canary's own: its deploy (promoted) or its rollback (aborted)."""
    from ..deploy.instance import InstanceOutcome

    own = {o.name: o for o in canary.deploy_outcomes}
    for outcome in canary.rollback_outcomes:
        first = own.get(outcome.name)
        outcome.status = "rolled-back" if outcome.status == "changed" else outcome.status
        outcome.detail = f"canary {canary.decision}: {canary.reason}; previous binary live again"
        outcome.phases = {**(first.phases if first else {}), **{f"rollback_{k}": v for k, v in outcome.phases.items()}}
        own[outcome.name] = outcome
    seen = {o.name for o in rollout.outcomes}
    rollout.outcomes = [own.get(o.name, o) for o in rollout.outcomes] + [o for n, o in own.items() if n not in seen]
    reached = {o.name for o in rollout.outcomes}
    rollout.outcomes += [InstanceOutcome(i.name, "untouched", state="as before") for i in rollout.instances
                         if i.name not in reached]
    order = {i.name: n for n, i in enumerate(rollout.instances)}
    rollout.outcomes.sort(key=lambda o: order.get(o.name, len(order)))


def report(rollout, artifact, canary) -> dict:
    payload = rollout.report(artifact)
    if canary is not None:
        payload["canary"] = canary.report()
    return payload


def restore_leftover_weights(config, runtime, output) -> None:
    """Nothing to canary: weights an abandoned canary left behind go back to the configured ones."""
    from ..haproxy_state import PoolView

    servers = PoolView.read(runtime, config.pool).names
    initial = {}
    for _, weights in runtime.weights(config.pool, servers):
        if any(now != configured for now, configured in weights.values()):
            initial = {name: configured for name, (_, configured) in weights.items()}
    if initial:
        runtime.set_weights(config.pool, initial)
        output.line(f"canary: nothing to canary; weights left by an earlier canary set back to the configured ones "
                    f"({', '.join(f'{n}={w}' for n, w in initial.items())})")


def status_lines(topology, short, config, runtime, servers) -> list:
    """What ``api.status`` adds: each server's runtime weight (and its configured one when they differ),
    and a canary in progress (from its state on the lock balancer)."""
    from ..canary import state

    lines = []
    if not servers:
        return lines
    try:
        per_balancer = runtime.weights(config.pool, servers)
    except Exception as exc:  # noqa: BLE001 - status shows what it can
        return [f"weights: unknown ({exc})"]
    current = state.parse(topology.control_transport().run(state.read(config.pool), warn=True).stdout)
    shown = []
    for balancer, weights in per_balancer:
        shown.append(f"{balancer}: " + ", ".join(
            f"{name}={now}" + (f" (configured {initial})" if now != initial else "") for name, (now, initial) in weights.items()))
    lines.append(f"weights ({config.pool}) " + "; ".join(shown))
    changed = any(now != initial for _, weights in per_balancer for now, initial in weights.values())
    if current:
        lines.append(f"canary in progress: {', '.join(current.get('canaries', []))} {current.get('phase', '')} at step "
                     f"{current.get('step', '?')}% (run {current.get('run', '?')} by {current.get('who', '?')})")
    elif changed:
        lines.append(f"weights differ from the configured ones and no canary runs (an abandoned one?); fix: "
                     f"inv {short}.deploy --binary PATH-OF-THE-BINARY-ON-DISK --canary (nothing to canary then: it sets "
                     "the configured weights back)")
    return lines

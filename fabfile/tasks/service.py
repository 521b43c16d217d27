"""inv api.* and inv stream.*: one task set, two binary_service configurations."""

from __future__ import annotations

import json
import sys

from invoke import Collection
from invoke.exceptions import Exit

from .. import exits
from ..output import Masker, Output, write_report
from ..services import SERVICES, ServiceConfig
from . import canary as canary_glue
from . import support
from .support import task

DEPLOY_HELP = {
    "binary": "the binary to push (required)",
    "force": "deploy even if taking an instance out leaves its HAProxy pool with no server UP",
    "inventory": support.COMMON_HELP["inventory"],
    "limit": support.COMMON_HELP["limit"],
    "report": "also write each instance's outcome and phase timings as JSON to this path",
    "set": support.COMMON_HELP["set"],
    "lock_wait": "wait up to SECONDS for another run's deploy lock instead of exiting 3",
    "message": "why this run: recorded in the deploy lock and the audit trail",
    "batch": "instances taken out at once: N or P% of the targets (default 1); never more than deploy_min_up allows",
    "max_fail": "stop after N failed instances (default 1) and put the failed batch back on its previous binary",
    **canary_glue.CANARY_HELP,
}
SETUP_HELP = {**support.COMMON_HELP, "secrets": "secrets file for the env template (default: the inventory's secrets_file)"}


def timeouts_from(variables: dict):
    """Every deploy_* timing override, checked before anything is touched (InvalidValue: exit 2)."""
    from ..deploy.rollout import Timeouts
    from ..values import seconds

    d = Timeouts()
    return Timeouts(
        drain=seconds("deploy_drain_timeout", variables.get("deploy_drain_timeout", d.drain)),
        health=seconds("deploy_health_timeout", variables.get("deploy_health_timeout", d.health), low=0.5),
        haproxy_up=seconds("deploy_haproxy_up_timeout", variables.get("deploy_haproxy_up_timeout", d.haproxy_up), low=0.5),
        interval=seconds("deploy_poll_interval", variables.get("deploy_poll_interval", d.interval), low=0.05, high=10),
        soak=seconds("deploy_soak_seconds", variables.get("deploy_soak_seconds", d.soak), high=3600),
        settle=seconds("deploy_settle_timeout", variables.get("deploy_settle_timeout", d.settle), high=600),
    )


def rollout_for(config: ServiceConfig, loaded, hosts, topology, output, batch=1, max_fail=1):
    """The rollout of ``hosts`` through ``topology``'s balancers; every override, the pool's capacity floor
    and the batching are checked first (InvalidValue: exit 2)."""
    from ..deploy.rollout import Instance, Rollout, batching
    from ..transports import connect

    timeouts = timeouts_from(hosts[0].vars_with(config.defaults))
    plan = batching(batch, support.floor_of(loaded, config), max_fail, len(hosts))
    instances = [Instance(host.name, connect(host), config.settings(host.vars_with(config.defaults))) for host in hosts]
    return Rollout(instances, topology.runtime(), config.pool, output, timeouts, batch=plan.batch, floor=plan.floor,
                   max_fail=plan.max_fail)


def finish(rollout, artifact, report, title, output, canary=None) -> None:
    counts = {}
    for outcome in rollout.outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    output.line(f"-- recap: {title}: " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    if report:
        write_report(report, canary_glue.report(rollout, artifact, canary), output.masker)
    if rollout.failed or (canary is not None and canary.decision != "promoted"):
        for line in rollout.state_lines():
            output.line(line)
        raise Exit(code=exits.FAILED)


def make_collection(short: str, config: ServiceConfig) -> Collection:
    """setup / deploy / rollback / status for one binary service."""

    @task(help={**SETUP_HELP, "lock_wait": DEPLOY_HELP["lock_wait"]}, iterable=["set"])
    @support.user_errors
    def setup(c, inventory=None, limit=None, check=False, diff=False, report=None, set=None, secrets=None,
              lock_wait=None, forks=10):
        from ..roles import common
        from ..roles.binary_service import role_for

        loaded, hosts = support.select(c, inventory, config.group, limit, set)
        secret_values = support.secrets_for(hosts, secrets)
        guard = support.guard(loaded, f"{short}.setup", lock_wait)
        floor = support.floor_of(loaded, config)
        # Hosts in parallel; a changed env file restarts the service within the pool's capacity floor
        # (at most pool size - deploy_min_up at once, each until it answers health), never the whole pool.
        support.play(f"{short}.setup", loaded, hosts, [common.ROLE, role_for(config, secret_values)], check=check,
                     diff=diff, report=report, extra_secrets=secret_values.values(), forks=forks,
                     guard=guard, floors=[(config.group, floor)])

    def roll(c, binary, inventory, limit, report, force, set, title, lock_wait, message, batch="1", max_fail="1",
             canary_flags=None, plot=None):
        """Validate, lock, preflight every target (refusing before any change), then roll; binary None
        rolls back. An interrupt makes the current instance safe, reports and releases the lock."""
        from ..deploy.artifact import DeployError, read_artifact
        from ..deploy.locking import held, who
        from ..deploy.recorder import Recorder
        from ..shell import RUN_ID, argv_line

        loaded, hosts = support.select(c, inventory, config.group, limit, set)
        support.check_placement(loaded)
        topology = support.topology(loaded)
        output = Output(support.masker_for(hosts))
        wait = support.lock_wait_value(lock_wait)
        if message is not None:
            from ..values import text

            text("--message", message)
        try:
            artifact = read_artifact(binary) if binary is not None else None
        except DeployError as exc:
            raise support.UsageError(str(exc)) from None
        again = ["inv", title] + (["--binary", binary] if binary is not None else []) + (
            [f"--inventory={support.inventory_path(c, inventory)}"] if inventory else []) + (
            ["--limit", limit] if limit else []) + (
            ["--batch", str(batch)] if str(batch) != "1" else [])
        hint = argv_line(again)
        # Validates every override and the batching first.
        rollout = rollout_for(config, loaded, hosts, topology, output, batch=batch, max_fail=max_fail)
        plan, mode = canary_glue.plan_and_mode(config, topology, hosts, canary_flags) if canary_flags else (None, None)
        canary = None
        # The lock and the audit trail on one balancer: the topology's control host, elected once.
        recorder = Recorder(topology.control_transport(), {i.name: i.transport for i in rollout.instances},
                            who=who(), run=RUN_ID, task_name=title)
        rollout.context.audit = recorder
        try:
            with held(topology, title, sha256=artifact.sha256 if artifact else None, message=message, lock_wait=wait,
                      audit=recorder):
                try:
                    facts = rollout.preflight(artifact, force)
                except DeployError as exc:
                    raise support.UsageError(str(exc)) from None
                what = f"{artifact.path} sha256 {artifact.sha256[:12]}" if artifact else "each instance's .prev"
                output.line(f"== {title} {what} on {', '.join(h.name for h in hosts)}")
                try:
                    if plan is not None:
                        canary = canary_glue.start(config, topology, hosts, rollout, plan, mode, facts, artifact,
                                                   output, recorder)
                        if canary is None:
                            canary_glue.restore_leftover_weights(config, rollout.runtime, output)
                        elif canary.run(artifact, facts, force) == "promoted":
                            facts = {**facts, **{i.name: i.facts() for i in canary.instances}}
                    if canary is None or canary.decision == "promoted":
                        rollout.run(artifact, facts, force)
                except KeyboardInterrupt:
                    output.line(f"-- interrupted: {title}")
                    if canary is not None:
                        canary_glue.merge_outcomes(rollout, canary)
                    for line in rollout.state_lines():
                        output.line(line)
                    if report:
                        write_report(report, canary_glue.report(rollout, artifact, canary), output.masker)
                    if rollout.abandoned or any(o.state not in ("ready (UP)", "ready", "as before") for o in rollout.outcomes):
                        output.line(f"finish the job with: {hint}")
                    raise
                finally:
                    if plot and canary is not None:
                        from ..canary.plot import write_svg

                        write_svg(plot, canary.report())
                if canary is not None:
                    canary_glue.merge_outcomes(rollout, canary)
                finish(rollout, artifact, report, title, output, canary)
        finally:
            recorder.close()

    @task(help=DEPLOY_HELP, iterable=["set"])
    @support.user_errors
    def deploy(c, binary, inventory=None, limit=None, report=None, force=False, set=None, lock_wait=None, message=None,
               batch="1", max_fail="1", canary=False, canary_steps="10,25,50", canary_interval="30", canary_checks="2",
               canary_max_5xx="1", canary_max_slowdown="50", canary_min_requests="20", canary_count="1", plot=None):
        flags = dict(steps=canary_steps, interval=canary_interval, checks=canary_checks, max_5xx=canary_max_5xx,
                     max_slowdown=canary_max_slowdown, min_requests=canary_min_requests, count=canary_count)
        if plot and not canary:
            raise support.UsageError("--plot draws a canary: add --canary")
        roll(c, binary, inventory, limit, report, force, set, f"{short}.deploy", lock_wait, message, batch, max_fail,
             canary_flags=flags if canary else None, plot=plot)

    @task(help={k: DEPLOY_HELP[k] for k in ("force", "inventory", "limit", "report", "set", "lock_wait", "message",
                                            "batch", "max_fail")}, iterable=["set"])
    @support.user_errors
    def rollback(c, inventory=None, limit=None, report=None, force=False, set=None, lock_wait=None, message=None,
                 batch="1", max_fail="1"):
        roll(c, None, inventory, limit, report, force, set, f"{short}.rollback", lock_wait, message, batch, max_fail)

    @task(help={k: support.COMMON_HELP[k] for k in ("inventory", "limit", "report", "set")}, iterable=["set"])
    @support.user_errors
    def status(c, inventory=None, limit=None, report=None, set=None):
        from ..haproxy_state import PoolView

        loaded, hosts = support.select(c, inventory, config.group, limit, set)
        topology = support.topology(loaded)
        rollout = rollout_for(config, loaded, hosts, topology, Output(support.masker_for(hosts)))
        try:
            view = PoolView.read(rollout.runtime, config.pool)
        except Exception as exc:  # still show what the balancers that answer and the instances say
            print(f"warning: HAProxy runtime API: {exc}")
            try:
                view = PoolView.read(rollout.runtime.answering(), config.pool)
            except Exception:
                view = PoolView(config.pool, [])
        rows, fixes, unreachable = [], [], []
        for instance in rollout.instances:
            try:
                facts = instance.facts()
                code, body = instance.health()
            except Exception as exc:  # a host that is down: its row says so, the others still show
                unreachable.append(str(exc) if instance.name in str(exc) else f"{instance.name}: {exc}")
                rows.append({"instance": instance.name, "sha256": "?", "version": "?", "unit": "unreachable",
                             "health": "-", "haproxy": view.status(instance.name, "-"), "running_sha256": "?",
                             "flags": ["host unreachable"]})
                continue
            try:
                version = json.loads(body).get("version", "-")
            except ValueError:
                version = "-"
            flags = []
            state = view.status(instance.name, "-")
            row = view.row(instance.name)
            if row is not None and row.admin_out:
                flags.append(f"in {row.admin_out}")
            if facts["running_sha256"] != facts["sha256"]:
                flags.append("running process is not the binary on disk")
            rows.append({"instance": instance.name, "sha256": facts["sha256"][:12], "version": version,
                         "unit": facts["unit"], "health": code or "-", "haproxy": state,
                         "running_sha256": facts["running_sha256"][:12], "flags": flags})
            if flags:
                fixes.append(instance.name)
        print(f"{'instance':<16} {'sha256':<12} {'version':<10} {'unit':<10} {'health':<6} {'haproxy':<10} flags ({config.pool})")
        for row in rows:
            print(f"{row['instance']:<16} {row['sha256']:<12} {row['version']:<10} {row['unit']:<10} {row['health']:<6} "
                  f"{row['haproxy']:<10} {'; '.join(row['flags']) or '-'}")
        for line in canary_glue.status_lines(topology, short, config, rollout.runtime, view.names):
            print(line)
        if fixes:
            print(f"fix: inv {short}.deploy --binary PATH-OF-THE-BINARY-ON-DISK (converges {', '.join(fixes)}: "
                  f"restart onto the binary on disk, gates, ready)")
        if report:
            write_report(report, rows, Masker())
        if unreachable:
            for line in unreachable:
                print(f"error: {line}", file=sys.stderr)
            raise Exit(code=exits.FAILED)

    setup.__doc__ = f"Service user, directories, env file and hardened unit for {config.description} on {config.group}."
    deploy.__doc__ = f"Rolling, health-gated deploy of a binary to {config.group}; rolls back on failure."
    rollback.__doc__ = f"Back to each instance's .prev binary, one at a time, with the same gates ({config.pool})."
    status.__doc__ = f"Per instance: deployed sha256 and version, unit state, HAProxy state in {config.pool}."
    return Collection(short, setup, deploy, rollback, status)


collections = [make_collection(short, config) for short, config in SERVICES.items()]

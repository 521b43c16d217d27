"""inv api.* and inv stream.*: one task set, two binary_service configurations."""

from __future__ import annotations

import json

from invoke import Collection
from invoke.exceptions import Exit

from .. import exits
from ..output import Masker, Output, write_report
from ..services import SERVICES, ServiceConfig
from . import support
from .support import task

DEPLOY_HELP = {
    "binary": "the binary to push (required)",
    "force": "deploy even if taking an instance out leaves its HAProxy pool with no server UP",
    "inventory": support.COMMON_HELP["inventory"],
    "limit": support.COMMON_HELP["limit"],
    "report": "also write each instance's outcome and phase timings as JSON to this path",
    "set": support.COMMON_HELP["set"],
}
SETUP_HELP = {**{k: v for k, v in support.COMMON_HELP.items() if k != "forks"}, "secrets": "secrets file for the env template (default: the inventory's secrets_file)"}


def timeouts_from(variables: dict):
    from ..deploy.rollout import Timeouts

    defaults = Timeouts()
    return Timeouts(
        drain=float(variables.get("deploy_drain_timeout", defaults.drain)),
        health=float(variables.get("deploy_health_timeout", defaults.health)),
        haproxy_up=float(variables.get("deploy_haproxy_up_timeout", defaults.haproxy_up)),
        interval=float(variables.get("deploy_poll_interval", defaults.interval)),
    )


def rollout_for(config: ServiceConfig, loaded, hosts, output):
    from ..deploy.rollout import Instance, Rollout
    from ..transports import connect

    instances = [Instance(host.name, connect(host), config.settings(host.vars_with(config.defaults))) for host in hosts]
    variables = hosts[0].vars_with(config.defaults)
    return Rollout(instances, support.runtime_api(support.balancer(loaded)), config.pool, output,
                   timeouts_from(variables))


def finish(rollout, artifact, report, title, output) -> None:
    counts = {}
    for outcome in rollout.outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    output.line(f"-- recap: {title}: " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    if report:
        write_report(report, rollout.report(artifact), output.masker)
    if rollout.failed:
        raise Exit(code=exits.FAILED)


def make_collection(short: str, config: ServiceConfig) -> Collection:
    """setup / deploy / rollback / status for one binary service."""

    @task(help=SETUP_HELP, iterable=["set"])
    @support.user_errors
    def setup(c, inventory=None, limit=None, check=False, diff=False, report=None, set=None, secrets=None):
        from ..roles import common
        from ..roles.binary_service import role_for

        loaded, hosts = support.select(c, inventory, config.group, limit, set)
        secret_values = support.secrets_for(hosts, secrets)
        # One host at a time: a changed env file restarts the service, never the whole pool at once.
        support.play(f"{short}.setup", loaded, hosts, [common.ROLE, role_for(config, secret_values)], check=check,
                     diff=diff, report=report, extra_secrets=secret_values.values(), forks=1)

    def roll(c, binary, inventory, limit, report, force, set, title):
        """Preflight every target (refusing before any change), then roll; binary None rolls back."""
        from ..deploy.artifact import DeployError, read_artifact

        loaded, hosts = support.select(c, inventory, config.group, limit, set)
        output = Output(support.masker_for(hosts))
        try:
            artifact = read_artifact(binary) if binary is not None else None
            rollout = rollout_for(config, loaded, hosts, output)
            facts = rollout.preflight(artifact, force)
        except DeployError as exc:
            raise support.UsageError(str(exc)) from None
        what = f"{artifact.path} sha256 {artifact.sha256[:12]}" if artifact else "each instance's .prev"
        output.line(f"== {title} {what} on {', '.join(h.name for h in hosts)}")
        rollout.run(artifact, facts, force)
        finish(rollout, artifact, report, title, output)

    @task(help=DEPLOY_HELP, iterable=["set"])
    @support.user_errors
    def deploy(c, binary, inventory=None, limit=None, report=None, force=False, set=None):
        roll(c, binary, inventory, limit, report, force, set, f"{short}.deploy")

    @task(help={k: DEPLOY_HELP[k] for k in ("force", "inventory", "limit", "report", "set")}, iterable=["set"])
    @support.user_errors
    def rollback(c, inventory=None, limit=None, report=None, force=False, set=None):
        roll(c, None, inventory, limit, report, force, set, f"{short}.rollback")

    @task(help={k: support.COMMON_HELP[k] for k in ("inventory", "limit", "report", "set")}, iterable=["set"])
    @support.user_errors
    def status(c, inventory=None, limit=None, report=None, set=None):
        loaded, hosts = support.select(c, inventory, config.group, limit, set)
        rollout = rollout_for(config, loaded, hosts, Output(support.masker_for(hosts)))
        try:
            pool = {s.server: s.status for s in rollout.runtime.show_stat() if s.pool == config.pool}
        except Exception as exc:  # still show what the instances say
            pool = {}
            print(f"warning: HAProxy runtime API: {exc}")
        rows = []
        for instance in rollout.instances:
            facts = instance.facts()
            code, body = instance.health()
            try:
                version = json.loads(body).get("version", "-")
            except ValueError:
                version = "-"
            rows.append({"instance": instance.name, "sha256": facts["sha256"][:12], "version": version,
                         "unit": facts["unit"], "health": code or "-", "haproxy": pool.get(instance.name, "-")})
        print(f"{'instance':<16} {'sha256':<12} {'version':<10} {'unit':<10} {'health':<6} haproxy ({config.pool})")
        for row in rows:
            print(f"{row['instance']:<16} {row['sha256']:<12} {row['version']:<10} {row['unit']:<10} {row['health']:<6} {row['haproxy']}")
        if report:
            write_report(report, rows, Masker())

    setup.__doc__ = f"Service user, directories, env file and hardened unit for {config.description} on {config.group}."
    deploy.__doc__ = f"Rolling, health-gated deploy of a binary to {config.group}; rolls back on failure."
    rollback.__doc__ = f"Back to each instance's .prev binary, one at a time, with the same gates ({config.pool})."
    status.__doc__ = f"Per instance: deployed sha256 and version, unit state, HAProxy state in {config.pool}."
    return Collection(short, setup, deploy, rollback, status)


collections = [make_collection(short, config) for short, config in SERVICES.items()]

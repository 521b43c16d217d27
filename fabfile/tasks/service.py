"""inv api.* and inv stream.*: one task set, two binary_service configurations."""

from __future__ import annotations

import json

from invoke import Collection, task
from invoke.exceptions import Exit

from .. import cli
from ..deploy import DeployError, Instance, Rollout, Timeouts, read_artifact
from ..haproxy_runtime import RuntimeAPI
from ..roles import common
from ..roles.binary_service import CONFIGS, ServiceConfig, role_for
from ..runner import Masker, Output, write_report
from ..transports import connect

DEPLOY_HELP = {
    "binary": "the binary to push (required)",
    "force": "deploy even if taking an instance out leaves its HAProxy pool with no server UP",
    "inventory": cli.COMMON_HELP["inventory"],
    "limit": cli.COMMON_HELP["limit"],
    "report": "also write each instance's outcome and phase timings as JSON to this path",
    "set": cli.COMMON_HELP["set"],
}
SETUP_HELP = {**cli.COMMON_HELP, "secrets": "secrets file for the env template (default: the inventory's secrets_file)"}


def timeouts_from(variables: dict) -> Timeouts:
    defaults = Timeouts()
    return Timeouts(
        drain=float(variables.get("deploy_drain_timeout", defaults.drain)),
        health=float(variables.get("deploy_health_timeout", defaults.health)),
        haproxy_up=float(variables.get("deploy_haproxy_up_timeout", defaults.haproxy_up)),
        interval=float(variables.get("deploy_poll_interval", defaults.interval)),
    )


def rollout_for(config: ServiceConfig, loaded, hosts, output) -> Rollout:
    instances = []
    for host in hosts:
        svc = config.settings(host.vars_with(config.defaults))
        instances.append(Instance(host.name, connect(host), svc))
    variables = hosts[0].vars_with(config.defaults)
    return Rollout(instances, RuntimeAPI(connect(cli.balancer(loaded))), config.pool, output, timeouts_from(variables))


def finish(rollout: Rollout, artifact, report, title, output) -> None:
    counts = {}
    for outcome in rollout.outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    output.line(f"-- recap: {title}: " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    if report:
        write_report(report, rollout.report(artifact), output.masker)
    if rollout.failed:
        raise Exit(code=1)


def make_collection(short: str, config: ServiceConfig) -> Collection:
    """setup / deploy / rollback / status for one binary service."""

    @task(help=SETUP_HELP, iterable=["set"])
    @cli.user_errors
    def setup(c, inventory=None, limit=None, check=False, diff=False, report=None, set=None, secrets=None):
        loaded, hosts = cli.select(c, inventory, config.group, limit, set)
        secret_values = cli.secrets_for(hosts, secrets)
        # One host at a time: a changed env file restarts the service, never the whole pool at once.
        cli.play(f"{short}.setup", loaded, hosts, [common.ROLE, role_for(config, secret_values)], check=check,
                 diff=diff, report=report, extra_secrets=secret_values.values(), parallel=False)

    def roll(c, binary, inventory, limit, report, force, set, title):
        """Preflight every target (refusing before any change), then roll; binary None rolls back."""
        loaded, hosts = cli.select(c, inventory, config.group, limit, set)
        output = Output(Masker.for_hosts(hosts))
        try:
            artifact = read_artifact(binary) if binary is not None else None
            rollout = rollout_for(config, loaded, hosts, output)
            facts = rollout.preflight(artifact, force)
        except DeployError as exc:
            raise cli.UsageError(str(exc)) from None
        what = f"{artifact.path} sha256 {artifact.sha256[:12]}" if artifact else "each instance's .prev"
        output.line(f"== {title} {what} on {', '.join(h.name for h in hosts)}")
        rollout.run(artifact, facts, force)
        finish(rollout, artifact, report, title, output)

    @task(help=DEPLOY_HELP, iterable=["set"])
    @cli.user_errors
    def deploy(c, binary, inventory=None, limit=None, report=None, force=False, set=None):
        roll(c, binary, inventory, limit, report, force, set, f"{short}.deploy")

    @task(help={k: DEPLOY_HELP[k] for k in ("force", "inventory", "limit", "report", "set")}, iterable=["set"])
    @cli.user_errors
    def rollback(c, inventory=None, limit=None, report=None, force=False, set=None):
        roll(c, None, inventory, limit, report, force, set, f"{short}.rollback")

    @task(help={k: cli.COMMON_HELP[k] for k in ("inventory", "limit", "report", "set")}, iterable=["set"])
    @cli.user_errors
    def status(c, inventory=None, limit=None, report=None, set=None):
        loaded, hosts = cli.select(c, inventory, config.group, limit, set)
        rollout = rollout_for(config, loaded, hosts, Output(Masker.for_hosts(hosts)))
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


collections = [make_collection(short, config) for short, config in CONFIGS.items()]

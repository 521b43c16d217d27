"""inv monitor.setup / monitor.status / monitor.rules: Prometheus, Alertmanager and node exporters."""

from __future__ import annotations

import sys

from invoke import Collection

from ..output import Masker, write_report
from . import support
from .support import task

MONITOR_GROUP = "monitoring"  # settings.MONITOR_GROUP (imported lazily there: inv --list stays light)


def _monitor_host(loaded):
    hosts = loaded.group(MONITOR_GROUP) if MONITOR_GROUP in loaded.groups else []
    if not hosts:
        raise support.UsageError(f"{loaded.path}: no '{MONITOR_GROUP}' group with a host; add one (the host that "
                                 "runs Prometheus and Alertmanager)")
    if len(hosts) > 1:
        raise support.UsageError(f"{loaded.path}: group '{MONITOR_GROUP}' has {len(hosts)} hosts; one monitor host "
                                 "is supported")
    return hosts[0]


@task(help=support.COMMON_HELP, iterable=["set"])
@support.user_errors
def setup(c, inventory=None, limit=None, check=False, diff=False, report=None, set=None, forks=10):
    """Node exporter on every host; Prometheus + Alertmanager + alert webhook on the monitor host.

    prometheus.yml is rendered from the inventory (node exporters of every host, each balancer's
    HAProxy exporter); the rules, prometheus.yml and alertmanager.yml are checked with promtool /
    amtool on the host before they replace the live files; reload only on change.
    """
    from ..roles import common, monitoring

    loaded, hosts = support.select(c, inventory, "all", limit, set)
    monitor = _monitor_host(loaded)

    def roles_for(host):
        roles = [common.ROLE, monitoring.NODE_EXPORTER_ROLE]
        return roles + [monitoring.MONITOR_ROLE] if host.name == monitor.name else roles

    support.play("monitor.setup", loaded, hosts, None, check=check, diff=diff, report=report, forks=forks,
                 roles_for=roles_for)


def monitor_api(loaded):
    """``MonitorAPI`` of the inventory's monitor host (its settings from the host's variables)."""
    from ..monitoring.api import MonitorAPI
    from ..monitoring.settings import MonitoringSettings
    from ..transports import connect

    monitor = _monitor_host(loaded)
    return MonitorAPI(connect(monitor), MonitoringSettings.from_vars(monitor.vars))


def alert_gate(loaded, build, *args, unwanted=None):
    """An ``AlertGate`` for the alert ``build(settings, rules, *args)`` expects (``monitoring.gate.expect_*``),
    with ``unwanted(rules)`` naming alerts that must stay silent, or None when the inventory has no
    monitoring group (the gates then skip their alert steps)."""
    if MONITOR_GROUP not in loaded.groups or not loaded.group(MONITOR_GROUP):
        return None
    from ..monitoring.gate import AlertGate
    from ..roles.monitoring import rules_for

    api = monitor_api(loaded)
    rules = rules_for(loaded, api.settings)
    return AlertGate(api.alerts, build(api.settings, rules, *args), unwanted=unwanted(rules) if unwanted else ())


@task(help={k: support.COMMON_HELP[k] for k in ("inventory", "report", "set")} | {
    "notifications": "also show the webhook's last N notifications (default 0)"}, iterable=["set"])
@support.user_errors
def status(c, inventory=None, report=None, set=None, notifications=0):
    """Firing alerts (Alertmanager) and scrape target health (Prometheus); exit 1 when either is not clean."""
    from .. import flags
    from ..monitoring.api import MonitorAPIError

    last = flags.integer("notifications", notifications, 0, 1000)
    loaded, _ = support.select(c, inventory, "all", None, set)
    api = monitor_api(loaded)
    try:
        targets, alerts = api.targets(), api.alerts()
        sent = api.notifications(last) if last else []
    except MonitorAPIError as exc:
        raise support.StepError(str(exc)) from None
    down = [t for t in targets if t.health != "up"]
    print(f"targets: {len(targets) - len(down)}/{len(targets)} up")
    print(f"  {'job':<13} {'instance':<17} {'health':<7} last error")
    for target in targets:
        print(f"  {target.job:<13} {target.instance:<17} {target.health:<7} {target.last_error or '-'}")
    print(f"alerts firing: {len(alerts)}")
    for alert in alerts:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
        print(f"  {alert.name:<26} since {alert.starts_at[:19]}  {labels}")
    for record in sent:
        note = record.get("notification") or {}
        names = ", ".join(sorted({(a.get("labels") or {}).get("alertname", "?") for a in note.get("alerts") or []}))
        print(f"  notified {note.get('status', '?'):<8} {names}")
    if report:
        write_report(report, {"targets": [t.__dict__ for t in targets], "alerts": [a.__dict__ for a in alerts],
                              "notifications": sent}, Masker())
    if down or alerts:
        sys.stdout.flush()  # the table before the error line, on a terminal or a pipe
        raise support.StepError(f"{len(down)} target(s) down, {len(alerts)} alert(s) firing")


@task(help={"out": "folder to write the rule file and a scrape-config snippet into (created if missing)",
            "inventory": support.COMMON_HELP["inventory"], "set": support.COMMON_HELP["set"]}, iterable=["set"])
@support.user_errors
def rules(c, out=None, inventory=None, set=None):
    """Write the alert rules (and the scrape jobs they expect) for an existing Prometheus."""
    from pathlib import Path

    from ..monitoring import rules as alert_rules
    from ..monitoring.settings import MonitoringSettings
    from ..output import write_private
    from ..roles.monitoring import prometheus_config, rules_for

    if not out:
        raise support.UsageError("--out DIR is required: the folder the rule file goes to")
    loaded, _ = support.select(c, inventory, "all", None, set)
    hosts = loaded.group(MONITOR_GROUP) if MONITOR_GROUP in loaded.groups else []
    variables = hosts[0].vars if hosts else support.parse_set(set)
    settings = MonitoringSettings.from_vars(variables)
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise support.UsageError(f"--out {out}: exists and is not a folder")
    rule_text = alert_rules.render(rules_for(loaded, settings))
    scrape_text = prometheus_config(loaded, settings, hosts[0].name if hosts else "prometheus")
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in ((alert_rules.RULES_FILE, rule_text), ("veza-prometheus.yml", scrape_text)):
        write_private(str(folder / name), text.encode("utf-8"))
        print(f"wrote {folder / name}")
    print("add the rule file to rule_files: and the node/haproxy jobs of veza-prometheus.yml to scrape_configs:")


collection = Collection("monitor", setup, status, rules)

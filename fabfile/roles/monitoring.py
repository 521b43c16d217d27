"""monitoring: a node exporter on every host; Prometheus, Alertmanager and our webhook on the monitor host.

Defaults: see ``monitoring.settings.DEFAULTS`` (intervals, ports, each rule's ``for`` and threshold).
Steps (every host, ``node_exporter``):
    - package prometheus-node-exporter (Debian 12: 1.5.0); its address, port and collectors in /etc/default
    - its textfile directory readable by it (a keepalived notify script may have made it first, umask 077)
    - service prometheus-node-exporter enabled and running
Steps (the monitoring group, ``monitor_role``):
    - packages prometheus (2.42) and prometheus-alertmanager (0.25)
    - the alert rules, checked with ``promtool check rules`` on a temporary file before they replace the live one
    - prometheus.yml rendered from the inventory (targets from the groups), checked with ``promtool check config``
    - alertmanager.yml (every alert to our webhook), checked with ``amtool check-config``
    - /etc/default files: listen ports, retention, Alertmanager without cluster gossip (one instance)
    - the webhook receiver: user, script, hardened unit, running
    - services prometheus and prometheus-alertmanager enabled and running
Handlers: a changed config reloads (SIGHUP) and counts only once the service's own
``*_config_last_reload_successful`` says 1 with a newer timestamp; changed /etc/default
arguments restart and wait for ``/-/ready``.
"""

from __future__ import annotations

from pathlib import Path

from .. import values
from ..monitoring import rules as alert_rules
from ..monitoring.settings import (DEFAULTS, NODE_EXPORTER_TEXTFILE_DIR, MonitoringSettings, haproxy_targets, node_targets,
                                   pool_floors)
from ..operations import apt_packages, directory, file, group, service, system_user, systemd_unit
from ..shell import q
from ..templating import TemplateError, render
from .base import Role
from .haproxy_vars import DEFAULTS as HAPROXY_DEFAULTS

RULES_PATH = f"/etc/prometheus/{alert_rules.RULES_FILE}"
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
ALERTMANAGER_CONFIG = "/etc/prometheus/alertmanager.yml"
WEBHOOK_USER = "veza-alerts"
WEBHOOK_SCRIPT = "/usr/local/lib/veza-ops/alert-webhook.py"
WEBHOOK_UNIT = "veza-alert-webhook"
WEBHOOK_SOURCE = Path(__file__).resolve().parent.parent.parent / "templates" / "monitoring" / "alert-webhook.py"
NODE_EXPORTER = "prometheus-node-exporter"


def _defaults_file(args: str) -> str:
    return f"# Managed by Veza ops (roles/monitoring.py).\nARGS=\"{args}\"\n"


def node_exporter_listen(host, port: int) -> str:
    """The host's own address when it has an IP one: the seed's HAProxy stats socket holds 127.0.0.1:9100
    on the balancers, so a wildcard bind on node exporter's usual port would fail there."""
    import ipaddress

    try:
        address = ipaddress.ip_address(str(host.address or ""))
    except ValueError:
        return f":{port}"
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _node_exporter_steps(context):
    settings = MonitoringSettings.from_vars(context.vars)
    listen = node_exporter_listen(context.host, settings.node_exporter_port)
    return [
        apt_packages([NODE_EXPORTER]),
        file(f"/etc/default/{NODE_EXPORTER}", _defaults_file(" ".join(
            [f"--web.listen-address={listen}", "--collector.disable-defaults",
             *(f"--collector.{name}" for name in settings.node_exporter_collectors)])),
             notify=["restart node exporter"]),
        directory("/var/lib/prometheus", "prometheus", "prometheus"),  # the package's owner, mode 0755
        directory(NODE_EXPORTER_TEXTFILE_DIR),
        service(NODE_EXPORTER, enabled=True, running=True),
    ]


def _node_exporter_handlers(variables):
    return {"restart node exporter": f"systemctl restart {NODE_EXPORTER}"}


NODE_EXPORTER_ROLE = Role(name="node_exporter", defaults=DEFAULTS, steps=_node_exporter_steps,
                          handlers=_node_exporter_handlers)


def rules_for(inventory, settings: MonitoringSettings) -> list:
    """The alert rules for this inventory's pools and, when it has one, its balancer pair."""
    from ..lb_pair import pair_settings
    from ..services import BALANCER_GROUP

    balancers = inventory.group(BALANCER_GROUP)
    pair = pair_settings(BALANCER_GROUP, balancers, list(inventory.hosts.values())) if balancers else None
    return alert_rules.alert_rules(settings, pool_floors(inventory), pair.vip if pair else None)


def prometheus_config(inventory, settings: MonitoringSettings, monitor_name: str) -> str:
    return render("monitoring/prometheus.yml.j2", {
        "s": settings, "rules_path": RULES_PATH, "monitor": monitor_name, "node_job": alert_rules.NODE_JOB,
        "haproxy_job": alert_rules.HAPROXY_JOB, "node_targets": node_targets(inventory, settings),
        "haproxy_targets": haproxy_targets(inventory, HAPROXY_DEFAULTS)})


def _log_dir(settings: MonitoringSettings) -> str:
    """The webhook log's folder under /var/log (systemd's LogsDirectory creates it for the service user)."""
    parent = settings.webhook_log.rsplit("/", 1)[0]
    if not parent.startswith("/var/log/") or parent.count("/") != 3:
        raise values.InvalidValue(f"monitoring_webhook_log: {settings.webhook_log} must be a file in a folder of "
                                  "/var/log (/var/log/NAME/FILE), which systemd creates for the webhook's user")
    return parent.rsplit("/", 1)[1]


def _monitor_steps(context):
    settings = MonitoringSettings.from_vars(context.vars)
    log_dir = _log_dir(settings)
    try:
        rules_text = alert_rules.render(rules_for(context.inventory, settings))
        prometheus_text = prometheus_config(context.inventory, settings, context.host.name)
    except values.InvalidValue as exc:
        raise TemplateError(f"monitoring on {context.host.name}: {exc}") from None
    return [
        apt_packages(["prometheus", "prometheus-alertmanager"]),
        file(RULES_PATH, rules_text, validate="promtool check rules {path} >/dev/null", backup=True,
             notify=["reload prometheus"]),
        file(PROMETHEUS_CONFIG, prometheus_text, validate="promtool check config {path} >/dev/null", backup=True,
             notify=["reload prometheus"]),
        file("/etc/default/prometheus", _defaults_file(
            f"--web.listen-address=0.0.0.0:{settings.prometheus_port} "
            f"--storage.tsdb.retention.time={settings.retention.text}"), notify=["restart prometheus"]),
        file(ALERTMANAGER_CONFIG, render("monitoring/alertmanager.yml.j2", {"s": settings}),
             validate="amtool check-config {path} >/dev/null", backup=True, notify=["reload alertmanager"]),
        # One Alertmanager: no cluster gossip (it would wait for peers to settle before notifying).
        file("/etc/default/prometheus-alertmanager", _defaults_file(
            f"--cluster.listen-address= --web.listen-address=:{settings.alertmanager_port}"),
            notify=["restart alertmanager"]),
        group(WEBHOOK_USER),
        system_user(WEBHOOK_USER, WEBHOOK_USER),
        directory("/usr/local/lib/veza-ops"),
        file(WEBHOOK_SCRIPT, WEBHOOK_SOURCE.read_text(encoding="utf-8"), mode="0755", notify=["restart webhook"]),
        systemd_unit(f"{WEBHOOK_UNIT}.service", render("monitoring/alert-webhook.service.j2", {
            "s": settings, "user": WEBHOOK_USER, "script": WEBHOOK_SCRIPT, "log_dir": log_dir}),
            notify=["restart webhook"]),
        service(WEBHOOK_UNIT, enabled=True, running=True),
        service("prometheus", enabled=True, running=True),
        service("prometheus-alertmanager", enabled=True, running=True),
    ]


# A reload counts once the service itself says it loaded the new file: its last-reload timestamp moved
# past the one before and its success gauge reads 1. The timestamp has whole seconds, so a reload
# right after a start waits for the next second first.
RELOAD_AND_VERIFY = """\
metric() {{ curl -s --max-time 2 {url} | awk -v name="$1" '$1 == name {{ printf "%d\\n", $2 }}'; }}
before=$(metric {stamp}); before=${{before:-0}}
while [ "$(date +%s)" -le "$before" ]; do sleep 0.1; done
systemctl reload {unit} || exit 1
for i in $(seq 1 100); do
  if [ "$(metric {stamp})" -gt "$before" ] 2>/dev/null && [ "$(metric {ok})" = 1 ]; then exit 0; fi
  sleep 0.1
done
echo "{unit}: reload not confirmed within 10 s ({ok} is $(metric {ok})); journalctl -u {unit}" >&2
exit 1
"""

RESTART_AND_WAIT = """\
systemctl restart {unit} || exit 1
for i in $(seq 1 300); do curl -sf --max-time 1 -o /dev/null {url} && exit 0; sleep 0.2; done
echo "{unit}: not ready within 60 s after the restart; journalctl -u {unit}" >&2
exit 1
"""


def _monitor_handlers(variables):
    settings = MonitoringSettings.from_vars(variables)
    handlers = {}
    for unit, port, prefix in (("prometheus", settings.prometheus_port, "prometheus"),
                               ("prometheus-alertmanager", settings.alertmanager_port, "alertmanager")):
        base = f"http://127.0.0.1:{port}"
        short = "prometheus" if unit == "prometheus" else "alertmanager"
        handlers[f"restart {short}"] = RESTART_AND_WAIT.format(unit=q(unit), url=q(f"{base}/-/ready"))
        handlers[f"reload {short}"] = RELOAD_AND_VERIFY.format(
            unit=q(unit), url=q(f"{base}/metrics"), stamp=f"{prefix}_config_last_reload_success_timestamp_seconds",
            ok=f"{prefix}_config_last_reload_successful")
    handlers["restart webhook"] = f"systemctl restart {q(WEBHOOK_UNIT)}"
    return handlers


MONITOR_ROLE = Role(name="monitor", defaults=DEFAULTS, steps=_monitor_steps, handlers=_monitor_handlers)

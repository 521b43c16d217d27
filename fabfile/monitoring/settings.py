"""The monitoring variables, checked, and what Prometheus scrapes, read from the inventory.

Pure: no I/O. The monitor host's variables (defaults below, the ``monitoring`` group's vars,
``--set``) give the intervals, ports and each alert rule's ``for`` and threshold; the
inventory's groups give the targets:

- ``node``: a node exporter on every host of the inventory (instance label: the host name);
- ``haproxy``: each balancer's built-in exporter (``haproxy_metrics_bind``; a wildcard bind
  is scraped on the balancer's address), instance label the balancer's name;
- ``prometheus`` and ``alertmanager``: the monitor's own two services, on localhost.

Every value is checked against its grammar before anything renders (``InvalidValue``: one
line, exit 2, nothing touched).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .. import values
from ..capacity import CapacityFloor
from ..services import BALANCER_GROUP, SERVICES

MONITOR_GROUP = "monitoring"
NODE_EXPORTER_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"  # Debian's folder for the textfile collector

DEFAULTS = {
    # Production-sized; the lab's hosts.yaml shortens them so the failover gates stay short.
    "monitoring_scrape_interval": "15s",
    "monitoring_evaluation_interval": "15s",
    "monitoring_retention": "15d",
    "monitoring_prometheus_port": 9090,
    "monitoring_alertmanager_port": 9093,
    "monitoring_node_exporter_port": 9100,
    # Only these collectors: Debian's default set (with the systemd collector, which walks every unit over
    # D-Bus on each scrape: 12.8 s a scrape seen on a loaded lab host) cost 6-10x the CPU per scrape, ~4 % of
    # a core per host at a 1 s interval. textfile carries the VIP-holder metric.
    "monitoring_node_exporter_collectors": ["textfile", "cpu", "loadavg", "meminfo", "filesystem", "netdev", "time",
                                            "uname"],
    # Our webhook receiver (Alertmanager's only receiver): loopback only, one JSON line per notification.
    "monitoring_webhook_port": 9095,
    "monitoring_webhook_log": "/var/log/veza-alerts/notifications.jsonl",
    # Alertmanager: first notification of a new alert group after group_wait, later changes
    # (a resolution) after group_interval, a still-firing alert again after repeat_interval.
    "monitoring_group_wait": "10s",
    "monitoring_group_interval": "1m",
    "monitoring_repeat_interval": "4h",
    # How long each condition must hold before its alert fires (Prometheus' ``for``).
    "monitoring_pool_empty_for": "15s",
    "monitoring_below_floor_for": "30s",
    "monitoring_server_down_for": "1m",
    "monitoring_node_down_for": "1m",
    "monitoring_balancer_down_for": "30s",
    "monitoring_vip_holders_for": "15s",
    "monitoring_5xx_share": 0.05,
    "monitoring_5xx_window": "5m",
    "monitoring_5xx_for": "2m",
    "monitoring_check_failures": 3,
    "monitoring_check_failures_window": "5m",
    # Added to each rule's budget for the alert's trip to Alertmanager (measured well under 1 s).
    "monitoring_alert_slack": "2s",
}

_DURATION = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_COLLECTOR = re.compile(r"[a-z][a-z0-9_]{0,40}")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Duration:
    """A Prometheus duration: its text (``15s``) and its length in seconds."""

    text: str
    seconds: float


def duration(name: str, value, low: float = 0.0, high: float = 366 * 86400) -> Duration:
    """``15s``, ``1m``, ``500ms``... (one unit, as Prometheus writes them) or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = values.seconds(name, value, low, high)
        if number != int(number):
            return duration(name, f"{round(number * 1000)}ms", low, high)
        return Duration(f"{int(number)}s", float(number))
    match = _DURATION.fullmatch(str(value).strip())
    if not match:
        raise values.InvalidValue(f"{name}: {str(value)[:60]!r} is not a duration like 15s, 1m or 500ms")
    length = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not low <= length <= high:
        raise values.InvalidValue(f"{name}: {match.group(0)} must be from {low:g}s to {high:g}s")
    return Duration(match.group(0), float(length))


def share(name: str, value) -> float:
    """A fraction in (0, 1): 0.05 for 5 %."""
    number = values.seconds(name, value, 0.0, 1.0, allow_low=False) if not isinstance(value, bool) else None
    if number is None or number >= 1.0:
        raise values.InvalidValue(f"{name}: {value!r} must be a fraction above 0 and below 1 (0.05 is 5 %)")
    return number


@dataclass(frozen=True)
class Target:
    address: str  # host:port
    instance: str  # the label alerts name: the inventory host
    path: str = "/metrics"


@dataclass(frozen=True)
class MonitoringSettings:
    scrape_interval: Duration
    scrape_timeout: Duration
    evaluation_interval: Duration
    retention: Duration
    prometheus_port: int
    alertmanager_port: int
    node_exporter_port: int
    node_exporter_collectors: tuple
    webhook_port: int
    webhook_log: str
    group_wait: Duration
    group_interval: Duration
    repeat_interval: Duration
    pool_empty_for: Duration
    below_floor_for: Duration
    server_down_for: Duration
    node_down_for: Duration
    balancer_down_for: Duration
    vip_holders_for: Duration
    share_5xx: float
    window_5xx: Duration
    for_5xx: Duration
    check_failures: int
    check_failures_window: Duration
    alert_slack: Duration

    @classmethod
    def from_vars(cls, v: dict) -> "MonitoringSettings":
        v = {**DEFAULTS, **v}
        scrape = duration("monitoring_scrape_interval", v["monitoring_scrape_interval"], 0.1, 3600)
        ports = {name: values.port(f"monitoring_{name}", v[f"monitoring_{name}"])
                 for name in ("prometheus_port", "alertmanager_port", "node_exporter_port", "webhook_port")}
        if len(set(ports.values())) != len(ports):
            raise values.InvalidValue("monitoring_*_port: prometheus, alertmanager, node exporter and webhook ports "
                                      f"must differ (got {', '.join(f'{k} {p}' for k, p in ports.items())})")
        fors = {name: duration(f"monitoring_{name}", v[f"monitoring_{name}"], 0, 86400)
                for name in ("pool_empty_for", "below_floor_for", "server_down_for", "node_down_for",
                             "balancer_down_for", "vip_holders_for")}
        collectors = v["monitoring_node_exporter_collectors"]
        if not isinstance(collectors, (list, tuple)) or "textfile" not in collectors:
            raise values.InvalidValue("monitoring_node_exporter_collectors: must be a list of collector names that "
                                      "includes textfile (it carries the VIP-holder metric)")
        return cls(
            scrape_interval=scrape,
            node_exporter_collectors=tuple(values.matching("monitoring_node_exporter_collectors", name,
                                                           _COLLECTOR, "a collector name like cpu or netdev")
                                           for name in collectors),
            # Prometheus refuses a timeout longer than the interval; 10 s is its own default cap.
            scrape_timeout=scrape if scrape.seconds <= 10 else Duration("10s", 10.0),
            evaluation_interval=duration("monitoring_evaluation_interval", v["monitoring_evaluation_interval"], 0.1, 3600),
            retention=duration("monitoring_retention", v["monitoring_retention"], 3600),
            webhook_log=values.absolute_path("monitoring_webhook_log", v["monitoring_webhook_log"]),
            group_wait=duration("monitoring_group_wait", v["monitoring_group_wait"], 0, 3600),
            group_interval=duration("monitoring_group_interval", v["monitoring_group_interval"], 1, 86400),
            repeat_interval=duration("monitoring_repeat_interval", v["monitoring_repeat_interval"], 60, 30 * 86400),
            share_5xx=share("monitoring_5xx_share", v["monitoring_5xx_share"]),
            window_5xx=duration("monitoring_5xx_window", v["monitoring_5xx_window"], 1, 86400),
            for_5xx=duration("monitoring_5xx_for", v["monitoring_5xx_for"], 0, 86400),
            check_failures=values.integer("monitoring_check_failures", v["monitoring_check_failures"], 1, 10000),
            check_failures_window=duration("monitoring_check_failures_window", v["monitoring_check_failures_window"],
                                           1, 86400),
            alert_slack=duration("monitoring_alert_slack", v["monitoring_alert_slack"], 0, 600),
            **ports, **fors,
        )


def monitor_hosts(inventory) -> list:
    """The hosts of the monitoring group (empty when the inventory has none)."""
    return inventory.group(MONITOR_GROUP)


def settings_for(inventory, cli_vars: dict | None = None) -> MonitoringSettings:
    """The monitor host's settings (the defaults when the inventory has no monitoring group)."""
    hosts = monitor_hosts(inventory)
    return MonitoringSettings.from_vars(hosts[0].vars if hosts else dict(cli_vars or {}))


def target_host(host) -> str:
    """Where a host is scraped: its address, else its name (an ssh host without one)."""
    where = str(host.address or (host.name if host.connection == "ssh" else ""))
    if not where:
        raise values.InvalidValue(f"host '{host.name}' has no address; Prometheus scrapes each host at its "
                                  "address: set 'address'")
    return values.hostname(f"host '{host.name}' address", where)


def node_targets(inventory, settings: MonitoringSettings) -> list:
    """A node exporter on every host of the inventory."""
    return [Target(f"{target_host(host)}:{settings.node_exporter_port}", host.name)
            for host in inventory.hosts.values()]


def exporter_address(host, haproxy_vars: dict) -> str | None:
    """``address:port`` of a balancer's Prometheus exporter, from its ``haproxy_metrics_bind`` (None when unset).

    A wildcard bind is reached on the balancer's own address; an IPv6 address comes in brackets.
    Prometheus's targets and the failover gates' exporter checks both read it here."""
    bind = str(haproxy_vars["haproxy_metrics_bind"] or "")
    if not bind:
        return None
    address, _, port = bind.rpartition(":")
    address = address.strip("[]")
    if address in ("", "*", "0.0.0.0", "::"):
        address = target_host(host)
    port = values.port("haproxy_metrics_bind", port)
    if ":" in address:
        try:
            return f"[{ipaddress.IPv6Address(address)}]:{port}"
        except ValueError:
            raise values.InvalidValue(f"haproxy_metrics_bind: {address!r} is not an IPv6 address") from None
    return f"{values.hostname('haproxy_metrics_bind', address)}:{port}"


def haproxy_targets(inventory, haproxy_defaults: dict) -> list:
    """Each balancer's Prometheus exporter, where ``haproxy_metrics_bind`` puts it (none when unset)."""
    targets = []
    for host in inventory.group(BALANCER_GROUP):
        v = host.vars_with(haproxy_defaults)
        address = exporter_address(host, v)
        if address is not None:
            targets.append(Target(address, host.name, values.url_path("haproxy_metrics_path", v["haproxy_metrics_path"])))
    return targets


def pool_floors(inventory) -> list:
    """The ``CapacityFloor`` of each service pool with instances: the floor deploys keep (``deploy_min_up``)."""
    return [CapacityFloor.of_pool(config.pool, inventory.group(config.group), config.defaults)
            for config in SERVICES.values() if inventory.group(config.group)]

"""The alert rules for this system, as data: each with its expression, ``for`` and budget.

A rule's *budget* is how long after its fault the alert may take to show in Alertmanager:
its ``for``, plus one scrape interval (the fault must be scraped), plus the scrape timeout for
rules about a target that stopped answering (a dead host is seen as a failed scrape), plus one
evaluation interval, plus ``monitoring_alert_slack`` for the trip to Alertmanager. Its *resolve
budget* is the same without the ``for``. The failover gates hold each alert to them.

``render(rules)`` gives the Prometheus rule file (YAML); ``inv monitor.rules --out DIR`` writes it
for an existing Prometheus, ``monitor.setup`` installs it after ``promtool check rules``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .settings import Duration, MonitoringSettings

GROUP_NAME = "veza"
RULES_FILE = "veza-alerts.rules.yml"
NODE_JOB = "node"
HAPROXY_JOB = "haproxy"
VIP_METRIC = "veza_keepalived_vip_held"

# Alert names: the gates and tests refer to them.
POOL_EMPTY = "VezaPoolNoServerUp"
BELOW_FLOOR = "VezaPoolBelowDeployFloor"
SERVER_DOWN = "VezaServerDown"
HIGH_5XX = "VezaPool5xxShareHigh"
CHECK_FAILURES = "VezaHealthChecksFailing"
NODE_DOWN = "VezaNodeExporterDown"
BALANCER_DOWN = "VezaBalancerExporterDown"
VIP_HOLDERS = "VezaVipHoldersNotOne"


@dataclass(frozen=True)
class Rule:
    alert: str
    expr: str
    for_: Duration
    severity: str
    summary: str
    description: str
    scrape_failure: bool = False  # the fault is a target that stops answering (adds the scrape timeout)
    labels: dict = field(default_factory=dict)

    def budget(self, settings: MonitoringSettings) -> float:
        """Seconds from the fault until the alert may show in Alertmanager at the latest."""
        return round(self.for_.seconds + self.resolve_budget(settings), 3)

    def resolve_budget(self, settings: MonitoringSettings) -> float:
        """Seconds from the fault's end until the alert may still be shown as firing."""
        seen = settings.scrape_interval.seconds + (settings.scrape_timeout.seconds if self.scrape_failure else 0)
        return round(seen + settings.evaluation_interval.seconds + settings.alert_slack.seconds, 3)


def _regex(names) -> str:
    return "|".join(sorted(names))


def alert_rules(settings: MonitoringSettings, floors, vip: str | None) -> list:
    """The rules for pools ``floors`` (``capacity.CapacityFloor``) and, with a VIP, the balancer pair."""
    s = settings
    pools = _regex(f.pool for f in floors) or "api_pool|stream_pool"
    server = f'haproxy_server_status{{proxy=~"{pools}"'
    rules = [
        Rule(POOL_EMPTY, f'sum by (instance, proxy) ({server},state="UP"}}) == 0', s.pool_empty_for, "critical",
             "{{ $labels.proxy }} on {{ $labels.instance }} has no server UP",
             "Every server of the pool is DOWN, in MAINT or DRAIN in this balancer's view: its requests get 503."),
    ]
    for floor in floors:
        if floor.min_up <= 0:
            continue  # a floor of 0 protects nothing
        rules.append(Rule(
            BELOW_FLOOR,
            f'sum by (instance, proxy) (haproxy_server_status{{proxy="{floor.pool}",state="UP"}}) < {floor.min_up}',
            s.below_floor_for, "warning",
            f"{{{{ $labels.proxy }}}} on {{{{ $labels.instance }}}} has fewer than {floor.min_up} of {floor.size} "
            "servers UP",
            f"Deploys keep at least {floor.min_up} server(s) of {floor.pool} UP (deploy_min_up); the pool is below "
            "that floor, so a deploy would refuse to start and one more failure may empty it.",
            labels={"floor": str(floor.min_up)}))
    rules += [
        Rule(SERVER_DOWN, f'max by (proxy, server) ({server},state="DOWN"}}) == 1', s.server_down_for, "warning",
             "{{ $labels.server }} in {{ $labels.proxy }} is DOWN",
             f"HAProxy's health checks mark the server DOWN, for more than {s.server_down_for.text}."),
        Rule(HIGH_5XX,
             f'sum by (proxy) (rate(haproxy_backend_http_responses_total{{proxy=~"{pools}",code="5xx"}}'
             f'[{s.window_5xx.text}])) / sum by (proxy) (rate(haproxy_backend_http_responses_total'
             f'{{proxy=~"{pools}"}}[{s.window_5xx.text}])) > {s.share_5xx:g}',
             s.for_5xx, "warning",
             f"{{{{ $labels.proxy }}}}: more than {s.share_5xx * 100:g} % of responses are 5xx",
             f"Share of 5xx responses over {s.window_5xx.text}, both balancers together, above "
             f"{s.share_5xx * 100:g} % for {s.for_5xx.text}."),
        Rule(CHECK_FAILURES,
             f'max by (proxy, server) (increase(haproxy_server_check_failures_total{{proxy=~"{pools}"}}'
             f'[{s.check_failures_window.text}])) >= {s.check_failures}',
             Duration("0s", 0.0), "warning",
             "{{ $labels.server }} in {{ $labels.proxy }} fails health checks",
             f"At least {s.check_failures} failed health checks in {s.check_failures_window.text} "
             "(HAProxy counts failures while the server is UP: a server about to go DOWN, or flapping)."),
        Rule(NODE_DOWN, f'up{{job="{NODE_JOB}"}} == 0', s.node_down_for, "critical",
             "{{ $labels.instance }}: node exporter not answering",
             f"Prometheus cannot scrape the node exporter for {s.node_down_for.text}: the host (or the exporter) is "
             "down.", scrape_failure=True),
        Rule(BALANCER_DOWN, f'up{{job="{HAPROXY_JOB}"}} == 0', s.balancer_down_for, "critical",
             "{{ $labels.instance }}: HAProxy's exporter not answering",
             f"Prometheus cannot scrape HAProxy's exporter for {s.balancer_down_for.text}: HAProxy (or the host) is "
             "down on this balancer.", scrape_failure=True),
    ]
    if vip:
        rules.append(Rule(
            VIP_HOLDERS, f"(sum({VIP_METRIC}) or vector(0)) != 1", s.vip_holders_for, "critical",
            f"VIP {vip}: {{{{ $value }}}} holders (expected exactly one)",
            "keepalived's notify script on each balancer reports whether it holds the VIP (node exporter's textfile "
            "collector); none means clients cannot reach HAProxy, two means a split brain.",
            labels={"vip": vip}))
    return rules


def render(rules) -> str:
    """The Prometheus rule file for ``rules``."""
    import yaml

    group = {"name": GROUP_NAME, "rules": [
        {"alert": rule.alert, "expr": rule.expr, "for": rule.for_.text,
         "labels": {"severity": rule.severity, **rule.labels},
         "annotations": {"summary": rule.summary, "description": rule.description}}
        for rule in rules]}
    header = "# Managed by Veza ops (fabfile/monitoring/rules.py); `inv monitor.rules --out DIR` writes it.\n"
    return header + yaml.safe_dump({"groups": [group]}, sort_keys=False, width=1000)


def find(rules, alert: str) -> Rule:
    return next(rule for rule in rules if rule.alert == alert)

"""keepalived: the VIP in front of the HAProxy pair (VRRP unicast between the two balancers).

Defaults: see ``lb_pair.DEFAULTS`` (lb_vip, lb_vrrp_*, lb_track_process_delay, lb_check_*, lb_script_user).
Steps:
    - group and system user ``lb_script_user`` (runs the frontend check: enable_script_security)
    - package keepalived (Debian 12: 2.2.7, built with track-process and JSON dumps)
    - a drop-in for haproxy.service writing 0/1 to /run/veza-haproxy-down on start/stop
      (keepalived's vrrp_track_file: FAULT the moment haproxy dies, container or not)
    - the notify script writing whether this node holds the VIP (node exporter's textfile collector)
    - /etc/keepalived/keepalived.conf: uploaded to a temporary file, checked with ``keepalived -t``,
      only a clean file replaces the live one (the previous one kept as .prev)
    - service keepalived enabled and running
Handlers: reload keepalived (SIGHUP: the VRRP state is kept, the VIP does not move), only on change.
"""

from __future__ import annotations

from .. import lb_pair
from ..monitoring.rules import VIP_METRIC
from ..monitoring.settings import NODE_EXPORTER_TEXTFILE_DIR
from ..operations import Operation, apt_packages, directory, file, group, service, system_user
from ..shell import Command, q
from ..services import BALANCER_GROUP
from ..templating import render
from .base import Role
from .haproxy_vars import DEFAULTS as HAPROXY_DEFAULTS

# keepalived 2.2.7's -t ends by SIGTERM-ing its own process group when the config holds a
# vrrp_script (exit 143, even for a broken file), and reports most mistakes only as text with
# exit 0: so it runs in its own session, and any output at all, or an exit other than 0/143,
# is a refusal.
VALIDATE = ("out=$(setsid keepalived -t -f {path} 2>&1); rc=$?; "
            "if [ -n \"$out\" ] || {{ [ $rc -ne 0 ] && [ $rc -ne 143 ]; }}; then "
            "printf 'keepalived -t (exit %s): %s\\n' \"$rc\" \"$out\" >&2; exit 1; fi")


# haproxy's unit records whether it runs, for keepalived's vrrp_track_file (see the template).
HAPROXY_STATE_FILE = "/run/veza-haproxy-down"
HAPROXY_DROP_IN = "/etc/systemd/system/haproxy.service.d/veza-keepalived.conf"
DROP_IN = f"""# Managed by Veza ops (roles/keepalived.py): tells keepalived at once when haproxy stops or dies.
[Service]
ExecStartPost=/bin/sh -c 'echo 0 > {HAPROXY_STATE_FILE}'
ExecStopPost=/bin/sh -c 'echo 1 > {HAPROXY_STATE_FILE}'
"""


# keepalived's notify script: whether this node holds the VIP, for node exporter's textfile collector;
# Prometheus' VIP-holder alert sums it over the pair.
NOTIFY_SCRIPT = "/usr/local/lib/veza-ops/keepalived-notify"


def vip_state_written(pair) -> Operation:
    """The notify script's file exists: keepalived writes it on state changes only, so a node that
    already ran when the hook was added gets it once from whether it holds the VIP now."""
    path = f"{NODE_EXPORTER_TEXTFILE_DIR}/veza-keepalived.prom"

    def decide(fact):
        if fact.strip() != "yes":
            yield Command(f"if ip -4 -o addr show dev {q(pair.interface)} | grep -qF {q(' ' + pair.vip + '/')}; "
                          f"then state=MASTER; else state=BACKUP; fi; {q(NOTIFY_SCRIPT)} INSTANCE veza_lb \"$state\" 0")

    return Operation("VIP holder metric written", f"if [ -s {q(path)} ]; then echo yes; fi", decide)


def role_for(secrets) -> Role:
    """The keepalived role with the secrets file that holds the VRRP password."""

    def steps(context):
        balancers = context.inventory.group(BALANCER_GROUP)
        pair = lb_pair.pair_settings(BALANCER_GROUP, balancers, list(context.inventory.hosts.values()))
        if pair is None:
            return []
        password = lb_pair.vrrp_password(pair, secrets)
        haproxy_vars = context.host.vars_with(HAPROXY_DEFAULTS)
        text = render("keepalived/keepalived.conf.j2", {
            "pair": pair, "node": pair.node(context.host.name), "password": password,
            "http_port": int(haproxy_vars["haproxy_http_port"]), "monitor_uri": haproxy_vars["haproxy_monitor_uri"],
            "state_file": HAPROXY_STATE_FILE, "notify_script": NOTIFY_SCRIPT})
        return [
            group(pair.script_user),
            system_user(pair.script_user, pair.script_user),
            apt_packages(["keepalived"]),
            directory("/etc/systemd/system/haproxy.service.d"),
            file(HAPROXY_DROP_IN, DROP_IN, mode="0644", after=[
                "systemctl daemon-reload",
                f"if systemctl is-active -q haproxy; then echo 0; else echo 1; fi > {q(HAPROXY_STATE_FILE)}"]),
            directory(NOTIFY_SCRIPT.rsplit("/", 1)[0]),
            directory(NODE_EXPORTER_TEXTFILE_DIR),
            file(NOTIFY_SCRIPT, render("keepalived/vrrp-notify.sh.j2", {
                "textfile_dir": NODE_EXPORTER_TEXTFILE_DIR, "metric": VIP_METRIC}), mode="0755"),
            file(lb_pair.KEEPALIVED_CONFIG, text, mode="0600", validate=VALIDATE, backup=True,
                 notify=["reload keepalived"], diff_mode="keys" if pair.version == 2 else "content"),
            service("keepalived", enabled=True, running=True),
            vip_state_written(pair),
        ]

    def handlers(variables):
        return {"reload keepalived": "systemctl reload-or-restart keepalived"}

    return Role(name="keepalived", defaults=lb_pair.DEFAULTS, steps=steps, handlers=handlers)

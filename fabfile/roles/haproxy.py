"""haproxy: install HAProxy, render haproxy.cfg from the inventory, validate, reload only on change.

Defaults: see ``haproxy_vars.DEFAULTS`` (every value in the template is one).
Steps:
    - (precondition) the TLS certificate exists on the host when haproxy_tls_cert_path is set
    - package haproxy
    - /etc/haproxy/haproxy.cfg: uploaded to a temporary file, `haproxy -c` on the host,
      only a valid file replaces the live one (the previous one kept as haproxy.cfg.prev)
    - service haproxy enabled and running
    - the server-state script and a drop-in for haproxy.service: states saved before every reload
      and on every stop, and a start never loads a MAINT/DRAIN lifted after the file was written
Handlers: reload haproxy (never restart: a reload keeps connections), server states saved
first by the unit so MAINT/DRAIN survive it (server-state-file), verified by a new
worker appearing within haproxy_reload_timeout; if none does, the previous config is put
back, reloaded, and the task fails.
"""

from .. import values
from ..haproxy_runtime import SERVER_STATE_SCRIPT
from ..facts import stat_fact
from ..operations import Operation, apt_packages, assert_that, directory, file, service
from ..shell import Command, q
from ..templating import TemplateError, render
from .base import Role
from .haproxy_vars import DEFAULTS, template_vars, validate_vars

CONFIG_PATH = "/etc/haproxy/haproxy.cfg"
PACKAGES = ["haproxy"]


def steps(context):
    variables = template_vars(context.host, context.inventory)
    problems = validate_vars(variables)
    if problems:
        raise TemplateError(f"templates/haproxy/haproxy.cfg.j2 on {context.host.name}: {problems[0]}")
    for which in ("api_servers_source", "stream_servers_source"):
        if variables[which].startswith("fallback"):
            message = (f"{context.host.name}: {which.split('_')[0]} upstreams come from the static "
                       f"{variables[which]}; check the group name in the inventory")
            if variables["haproxy_fallback"] == "refuse":
                raise TemplateError(f"{message} (haproxy_fallback: refuse)")
            context.warnings.append(message)
    operations = []
    cert = variables.get("haproxy_tls_cert_path")
    if cert:
        operations.append(assert_that(
            f"tls certificate {cert}", f"test -f {q(cert)}",
            f"haproxy_tls_cert_path {cert} does not exist on {context.host.name}; put the PEM there first",
        ))
    operations += [
        apt_packages(PACKAGES),
        directory(SERVER_STATE_SCRIPT.rsplit("/", 1)[0]),
        file(SERVER_STATE_SCRIPT, server_state_script(variables), mode="0755"),
        directory(DROP_IN.rsplit("/", 1)[0]),
        file(DROP_IN, DROP_IN_TEXT, mode="0644", after=["systemctl daemon-reload"]),
        file(CONFIG_PATH, render("haproxy/haproxy.cfg.j2", variables), mode="0644",
             validate="haproxy -c -q -f {path}", backup=True, notify=["reload haproxy"]),
        service("haproxy", enabled=True, running=True),
        admin_socket_private(variables["haproxy_admin_socket"]),
    ]
    return operations


def server_state_script(variables) -> str:
    """The balancer's ``haproxy-server-state`` script (save / forget-lifted) for its state file and socket."""
    return render("haproxy/haproxy-server-state.sh.j2", {"state_file": variables["haproxy_server_state_file"],
                                                         "admin_socket": variables["haproxy_admin_socket"]})


def admin_socket_private(path: str) -> Operation:
    """The admin socket owned by root, mode 0600, whatever created it.

    A reload hands the listening socket to the new worker (``-x sockpair@``), so a
    ``mode 600`` in haproxy.cfg only applies when the socket is first bound: a
    balancer first started with Debian's config keeps its ``root:haproxy 0660``
    admin socket until a restart. Its mode is fixed in place (same inode, so it
    survives later reloads).
    """
    def decide(fact):
        parts = fact.split()
        if len(parts) == 3 and (parts[0], parts[2]) != ("root", "600"):
            yield Command(f"chown root {q(path)} && chmod 600 {q(path)}")

    return Operation(f"admin socket {path} root-only", stat_fact(path), decide)


# Debian 12's unit reloads with a config check then SIGUSR2 to the master; the drop-in saves the
# server states between the two (so `systemctl reload` by hand keeps them too), saves them on every
# stop (restart included; after a crash the save finds no process and keeps the last file), and
# before a start drops from the file every server lifted since it was written.
DROP_IN = "/etc/systemd/system/haproxy.service.d/veza-server-state.conf"
DROP_IN_TEXT = f"""# Managed by Veza ops (roles/haproxy.py): server states survive reloads and restarts, never a lifted one.
[Service]
ExecStartPre={SERVER_STATE_SCRIPT} forget-lifted
ExecReload=
ExecReload=/usr/sbin/haproxy -Ws -f $CONFIG -c -q $EXTRAOPTS
ExecReload={SERVER_STATE_SCRIPT} save
ExecReload=/bin/kill -USR2 $MAINPID
ExecStop={SERVER_STATE_SCRIPT} save
"""


# `systemctl reload` only signals the master: in master-worker mode a config that fails to
# load at reload time (a port already taken, say) leaves the old worker serving and systemd
# reporting success. A reload counts only once a new worker exists; otherwise the previous
# config is put back and reloaded, and the handler fails.
RELOAD_AND_VERIFY = """\
master=$(systemctl show -p MainPID --value haproxy)
newest() {{ pgrep -n -P "$master" haproxy || echo none; }}
before=$(newest)
reloaded() {{ systemctl reload haproxy || return 1; for i in $(seq 1 {polls}); do
  [ "$(newest)" != "$before" ] && [ "$(newest)" != none ] && return 0; sleep 0.1; done; return 1; }}
if ! reloaded; then
  cp -p {previous} {config}; before=$(newest); reloaded
  echo "reload failed: the new config did not start a worker; previous haproxy.cfg restored" >&2; exit 1
fi
"""


def reload_command(variables) -> str:
    """Reload (the unit saves the server states first), and count it only when a new worker starts."""
    timeout = values.seconds("haproxy_reload_timeout", variables["haproxy_reload_timeout"], 0.5, 120)
    return RELOAD_AND_VERIFY.format(config=q(CONFIG_PATH), previous=q(CONFIG_PATH + ".prev"),
                                    polls=int(timeout * 10))


def handlers(variables):
    return {"reload haproxy": reload_command(variables)}


ROLE = Role(name="haproxy", defaults=DEFAULTS, steps=steps, handlers=handlers)

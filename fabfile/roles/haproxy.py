"""haproxy: install HAProxy, render haproxy.cfg from the inventory, validate, reload only on change.

Defaults: see ``haproxy_vars.DEFAULTS`` (every value in the template is one).
Steps:
    - (precondition) the TLS certificate exists on the host when haproxy_tls_cert_path is set
    - package haproxy
    - /etc/haproxy/haproxy.cfg: uploaded to a temporary file, `haproxy -c` on the host,
      only a valid file replaces the live one (the previous one kept as haproxy.cfg.prev)
    - service haproxy enabled and running
Handlers: reload haproxy (never restart: a reload keeps connections), verified by a new
worker appearing within haproxy_reload_timeout; if none does, the previous config is put
back, reloaded, and the task fails.
"""

from ..operations import apt_packages, assert_that, file, service
from ..runner import Role
from ..templating import TemplateError, render
from ..transports import q
from .haproxy_vars import DEFAULTS, template_vars, validate_vars

CONFIG_PATH = "/etc/haproxy/haproxy.cfg"


def steps(context):
    variables = template_vars(context.host, context.inventory)
    problems = validate_vars(variables)
    if problems:
        raise TemplateError(f"templates/haproxy/haproxy.cfg.j2 on {context.host.name}: {problems[0]}")
    operations = []
    cert = variables.get("haproxy_tls_cert_path")
    if cert:
        operations.append(assert_that(
            f"tls certificate {cert}", f"test -f {q(cert)}",
            f"haproxy_tls_cert_path {cert} does not exist on {context.host.name}; put the PEM there first",
        ))
    operations += [
        apt_packages(["haproxy"]),
        file(CONFIG_PATH, render("haproxy/haproxy.cfg.j2", variables), mode="0644",
             validate="haproxy -c -q -f {path}", backup=True, notify=["reload haproxy"]),
        service("haproxy", enabled=True, running=True),
    ]
    return operations


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


def handlers(variables):
    return {
        "reload haproxy": RELOAD_AND_VERIFY.format(
            config=q(CONFIG_PATH), previous=q(CONFIG_PATH + ".prev"), polls=int(variables["haproxy_reload_timeout"] * 10)),
    }


ROLE = Role(name="haproxy", defaults=DEFAULTS, steps=steps, handlers=handlers)

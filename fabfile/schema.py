"""The one variable schema: every variable the project reads, with its type, grammar, range and secret flag.

Declared once here: the roles' defaults give each variable's type (a number stays a
number, a flag a boolean, a list a list); ``GRAMMAR`` narrows every text to what its
slot takes (a path, a URL path, an HAProxy time, a token, one safe line...), and the
connection and inventory variables are declared beside them. ``host_problems`` checks a
host's resolved variables (inventory + ``--set``) once, after the inventory resolves and
before any task runs: ``support`` attaches the problems to their host, and a task that
targets such a host refuses (one line, exit 2) before touching anything.

Numbers are ASCII digits only (Python's ``int`` takes ``٤٠٩٦``; HAProxy does not), a
text slot never takes a control character, a quote, a backslash, a brace or a shell or
socat metacharacter (``!``, ``$``, backquote, ``;``, ``|``, ``&``, ``<``, ``>``), so no
value can add a line or a block to haproxy.cfg, keepalived.conf, a unit or an env file,
nor a program to a socat address or a shell command. Secrets (a secret flag, or a name
secret by ``masking``'s rule) take any one printable line: they are rendered only into
quoted env files and masked everywhere.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import re
from dataclasses import dataclass

from . import values
from .masking import is_secret_key, shown

_DIGITS = re.compile(r"-?[0-9]{1,18}")
_DECIMAL = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
_SECRET_TEXT = re.compile(r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]*")


@dataclass(frozen=True)
class Var:
    """One variable: ``kind`` (int, number, bool, line, path, url_path, token, user, host, hostport, time,
    duration, ip, network, choice, list, map, servers, secret, any), its range or choices, list items' kind."""

    kind: str  # choices: for a host, the texts allowed besides a host name ("" where empty means unset)
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    item: str | None = None
    secret: bool = False


def _port() -> Var:
    return Var("int", 1, 65535)


# Grammar of the variables whose type alone does not say enough; the rest follow their default's type.
GRAMMAR = {
    # connection and inventory (fabfile/inventory reads them; these are what the resolved values must be)
    "address": Var("host"), "connection": Var("choice", choices=("incus", "ssh", "local")),
    "incus_name": Var("token"), "incus_remote": Var("token"), "incus_remote_any_route": Var("bool"),
    "ssh_user": Var("user"), "ssh_port": _port(), "ssh_key_file": Var("path"),
    "ssh_known_hosts": Var("path"), "ssh_host_key_policy": Var("choice", choices=("strict", "accept-new", "accept")),
    "ssh_proxy_jump": Var("line"), "become": Var("bool"), "become_user": Var("user"), "become_method": Var("token"),
    "secrets_file": Var("line"), "secret_vars": Var("list", item="token"),
    "lab_subnet": Var("network"), "lab_network": Var("token"), "lab_image": Var("token"),
    # haproxy (templates/haproxy, the runtime API's socat address)
    "haproxy_admin_socket": Var("path"), "haproxy_server_state_file": Var("path"), "haproxy_chroot": Var("path"),
    "haproxy_tls_cert_path": Var("path"), "haproxy_user": Var("user"), "haproxy_group": Var("user"),
    "haproxy_log_facility": Var("token"), "haproxy_maxconn": Var("int", 1, 10_000_000),
    "haproxy_http_port": _port(), "haproxy_https_port": _port(), "haproxy_stats_socket_port": _port(),
    "haproxy_backend_api_port": _port(), "haproxy_stream_server_port": _port(),
    "haproxy_stats_socket_address": Var("ip"), "haproxy_stats_socket_level": Var("choice", choices=("user", "operator")),
    "haproxy_metrics_bind": Var("hostport", choices=("",)), "haproxy_bind_address": Var("host", choices=("",)),
    "haproxy_fallback": Var("choice", choices=("fallback", "refuse")),
    "haproxy_reload_timeout": Var("number", 0.5, 120),
    "haproxy_health_expect_status": Var("int", 100, 599), "haproxy_check_fall": Var("int", 1, 1000),
    "haproxy_check_rise": Var("int", 1, 1000), "haproxy_cookie_name": Var("token"),
    "haproxy_stream_hash_type": Var("choice", choices=("map-based", "consistent")),
    "haproxy_failover_l7_retry_methods": Var("list", item="token"),
    "haproxy_failover_error_limit": Var("int", 1, 1000), "haproxy_failover_retries": Var("int", 1, 100),
    "haproxy_failover_redispatch_interval": Var("int", 1, 1000),
    "haproxy_backend_api_fallback": Var("servers"), "haproxy_stream_server_fallback": Var("servers"),
    "haproxy_api_route_timeouts": Var("map", item="time"),
    # keepalived (templates/keepalived)
    "lb_vip": Var("ip"), "lb_vip_prefix": Var("int", 1, 32), "lb_vrrp_interface": Var("token"),
    "lb_vrrp_router_id": Var("int", 1, 255), "lb_vrrp_version": Var("choice", choices=(2, 3)),
    "lb_vrrp_advert_interval": Var("number", 0.01, 255), "lb_vrrp_priority": Var("int", 1, 254),
    "lb_vrrp_priority_step": Var("int", 1, 253), "lb_vrrp_preempt_delay": Var("number", 0, 1000),
    "lb_track_process_delay": Var("number", 0, 3600), "lb_check_interval": Var("number", 0.01, 3600),
    "lb_check_timeout": Var("number", 0.01, 3600), "lb_check_fall": Var("int", 1, 1000),
    "lb_check_rise": Var("int", 1, 1000), "lb_script_user": Var("user"),
    "lb_vrrp_password_secret": Var("token"),  # names the secrets file's entry; the entry itself is the secret
    # binary services (units, env files)
    "veza_config_dir": Var("path"), "veza_environment": Var("token"),
    "backend_api_db_host": Var("hostport"), "backend_api_db_name": Var("token"), "backend_api_db_user": Var("user"),
    "stream_server_writable_dirs": Var("list", item="path"), "backend_api_writable_dirs": Var("list", item="path"),
    # common
    "common_packages": Var("list", item="token"), "common_apt_lists_max_age": Var("int", 0, 10 ** 9),
    "common_timezone": Var("path_tail"),
    # deploys and canaries (fabfile/deploy, fabfile/canary)
    "deploy_min_up": Var("count_or_percent"), "deploy_min_up_per_host": Var("int", 0, 1000),
    # placement across Incus hosts (fabfile/placement.py)
    "placement_single_host_ok": Var("bool"),
    "deploy_drain_timeout": Var("number", 0, 86400), "deploy_health_timeout": Var("number", 0.5, 86400),
    "deploy_haproxy_up_timeout": Var("number", 0.5, 86400), "deploy_poll_interval": Var("number", 0.05, 10),
    "deploy_soak_seconds": Var("number", 0, 3600), "deploy_settle_timeout": Var("number", 0, 600),
    "deploy_lock_stale_seconds": Var("number", 1, 86400),
    "deploy_canary_inconclusive_limit": Var("int", 0, 1000), "deploy_canary_latency_floor_ms": Var("number", 0, 60000),
    # monitoring
    "monitoring_webhook_log": Var("path"), "monitoring_5xx_share": Var("number", 0, 1),
    "monitoring_check_failures": Var("int", 1, 1000),
}

_SUFFIX_KINDS = (  # for defaults GRAMMAR does not name: the slot their name says
    (("_port",), _port()), (("_uid",), Var("int", 1, 2 ** 31 - 1)), (("_user", "_group"), Var("user")),
    (("_dir", "_file", "_socket", "_install_dir", "_env_file", "_log_dir", "_cache_dir"), Var("path")),
    (("_health_path", "_path_prefix", "_ws_path", "_monitor_uri", "_metrics_path", "_health_path"), Var("url_path")),
    (("_binary_name",), Var("file_name")),
)


def _role_defaults() -> dict:
    """Every role's defaults (the variables the roles read), merged."""
    from .lb_pair import DEFAULTS as lb_defaults
    from .monitoring.settings import DEFAULTS as monitoring_defaults
    from .roles.binary_service import COMMON_DEFAULTS
    from .roles.common import DEFAULTS as common_defaults
    from .roles.haproxy_vars import DEFAULTS as haproxy_defaults
    from .services import SERVICES

    merged = {**common_defaults, **COMMON_DEFAULTS, **haproxy_defaults, **lb_defaults, **monitoring_defaults}
    for config in SERVICES.values():
        merged.update(config.defaults)
    return merged


def _declared(name: str, default) -> Var:
    if name in GRAMMAR:
        return GRAMMAR[name]
    for suffixes, var in _SUFFIX_KINDS:
        if name.endswith(suffixes):
            return var
    if name.startswith(("haproxy_timeout_", "haproxy_failover_timeout_", "haproxy_check_inter")) or name in (
            "haproxy_stats_timeout", "haproxy_hard_stop_after", "haproxy_slowstart", "haproxy_failover_inter",
            "haproxy_failover_fastinter", "haproxy_failover_downinter"):
        return Var("time")
    if name.startswith("monitoring_") and isinstance(default, str):
        return Var("duration")
    if isinstance(default, bool):
        return Var("bool")
    if isinstance(default, int):
        return Var("int", 0, 2 ** 31 - 1)
    if isinstance(default, float):
        return Var("number", 0, 10 ** 9)
    if isinstance(default, list):
        return Var("list", item="line")
    if isinstance(default, dict):
        return Var("map", item="line")
    return Var("line")


def schema() -> dict:
    """name -> Var for every variable the project reads (built once)."""
    global _SCHEMA
    if _SCHEMA is None:
        defaults = _role_defaults()
        _SCHEMA = {name: _declared(name, defaults.get(name)) for name in sorted({*defaults, *GRAMMAR})}
    return _SCHEMA


_SCHEMA = None
# Ansible's own spellings (fabfile/inventory/connection.py maps them onto ours) and its magic variables.
ANSIBLE_PREFIX = "ansible_"


def is_known(name: str) -> bool:
    return name in schema() or name.startswith(ANSIBLE_PREFIX)


def closest(name: str) -> str | None:
    found = difflib.get_close_matches(str(name), list(schema()), n=1, cutoff=0.6)
    return found[0] if found else None


def check_set_keys(cli_vars: dict) -> None:
    """An unknown ``--set`` key is a typo until proved otherwise: one line naming the closest known variable."""
    for name in cli_vars:
        if not is_known(name):
            hint = closest(name)
            suggestion = f"; did you mean '{hint}'?" if hint else "; see README 'Variables' for the known names"
            raise values.InvalidValue(f"--set {shown(name)}: no such variable{suggestion}")


def value_problem(name: str, value, var: Var | None = None) -> str | None:
    """Why ``value`` does not fit variable ``name``'s declaration, or None."""
    var = var or schema().get(name)
    if value is None or (var is None and not is_secret_key(name)):
        return None
    if getattr(value, "sealed", False):  # a vault value no task has read yet (inventory.vault.Sealed): checked
        return None  # where a role reads it, before any host changes (its plan)
    if hasattr(value, "unresolved_reason"):  # an inventory template that failed (inventory.jinja.Unresolved)
        return f"cannot template variable '{name}': {value.unresolved_reason}"
    if var is None or var.secret:  # an undeclared variable named like a secret, or a declared secret
        if isinstance(value, (dict, list)) or not _SECRET_TEXT.fullmatch(str(value)):
            return f"{name}: a secret must be one printable line"
        return None
    try:
        _check(name, value, var)
    except values.InvalidValue as exc:
        return str(exc)
    return None


def _check(name: str, value, var: Var) -> None:
    kind = var.kind
    if kind in ("list", "map", "servers"):
        return _check_collection(name, value, var)
    if isinstance(value, (dict, list, tuple)):
        raise values.InvalidValue(f"{name}: a single value is expected, not a {type(value).__name__}")
    if kind == "bool":
        if not isinstance(value, bool):
            raise values.InvalidValue(f"{name}: {shown(value)} is not true or false")
    elif kind == "int":
        if isinstance(value, bool) or isinstance(value, float) or not _DIGITS.fullmatch(str(value)):
            raise values.InvalidValue(f"{name}: {shown(value)} is not a whole number (ASCII digits)")
        values.integer(name, value, int(var.low) if var.low is not None else -2 ** 63,
                       int(var.high) if var.high is not None else None)
    elif kind == "number":
        if isinstance(value, bool) or not (isinstance(value, (int, float)) or _DECIMAL.fullmatch(str(value))):
            raise values.InvalidValue(f"{name}: {shown(value)} is not a number (ASCII digits)")
        values.seconds(name, value, var.low if var.low is not None else 0.0, var.high if var.high is not None else 1e12)
    elif kind == "choice":
        if isinstance(value, bool) or value not in var.choices:
            raise values.InvalidValue(f"{name}: {shown(value)} is not one of {', '.join(map(str, var.choices))}")
    elif kind == "count_or_percent":
        if isinstance(value, bool) or not re.fullmatch(r"[0-9]{1,9}%?", str(value)):
            raise values.InvalidValue(f"{name}: {shown(value)} is not a count (N) or a percentage (P%)")
    elif kind == "path":
        if value != "":
            values.absolute_path(name, value)
    elif kind == "url_path":
        if value != "":
            values.url_path(name, value)
    elif kind == "token":
        values.token(name, value)
    elif kind == "file_name":
        values.file_name(name, value)
    elif kind == "user":
        values.user_name(name, value)
    elif kind == "path_tail":
        values.matching(name, value, re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*"), "a zone name like Etc/UTC")
    elif kind in ("host", "hostport"):
        if value not in var.choices:  # the empty text only where it means "unset"
            values.hostname(name, value)
    elif kind == "ip":
        if value != "":
            try:
                ipaddress.ip_address(str(value))
            except ValueError:
                raise values.InvalidValue(f"{name}: {shown(value)} is not an IP address") from None
    elif kind == "network":
        try:
            ipaddress.ip_network(str(value))
        except ValueError:
            raise values.InvalidValue(f"{name}: {shown(value)} is not a network like 10.1.2.0/24") from None
    elif kind == "time":
        values.haproxy_time(name, value)
    elif kind == "duration":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            values.duration(name, value)
    else:  # line
        values.plain_line(name, value)


def _check_collection(name: str, value, var: Var) -> None:
    if var.kind == "servers":
        if not isinstance(value, list):
            raise values.InvalidValue(f"{name}: must be a list of {{name, address, port}}")
        for index, server in enumerate(value):
            if not isinstance(server, dict):
                raise values.InvalidValue(f"{name}[{index}]: must be a mapping {{name, address, port}}")
            values.matching(f"{name}[{index}].name", server.get("name", ""), re.compile(r"[A-Za-z0-9_.:-]{1,64}"),
                            "a server name (letters, digits, '-', '_', '.', ':')")
            values.hostname(f"{name}[{index}].address", server.get("address", ""))
            values.port(f"{name}[{index}].port", server.get("port", ""))
        return
    if var.kind == "list":
        if not isinstance(value, list):
            raise values.InvalidValue(f"{name}: must be a list, not {shown(value)}")
        for index, item in enumerate(value):
            _check(f"{name}[{index}]", item, Var(var.item or "line"))
        return
    if not isinstance(value, dict):
        raise values.InvalidValue(f"{name}: must be a mapping, not {shown(value)}")
    for key, item in value.items():
        values.url_path(f"{name} key", key) if name == "haproxy_api_route_timeouts" else \
            _check(f"{name} key", key, Var("token"))
        _check(f"{name}[{key}]", item, Var(var.item or "line"))


def host_problems(variables: dict, read=None) -> list:
    """Every declared variable of a host's resolved ``variables`` that does not fit its declaration
    (only the names ``read`` accepts, when given: what a task reads of a host it does not target)."""
    declared = schema()
    return [problem for name in sorted(variables) if (name in declared or is_secret_key(name))
            and (read is None or read(name))
            for problem in [_problem_of(name, variables[name], declared.get(name))] if problem]


_SCALARS = (str, int, float, bool)


def _problem_of(name: str, value, var: Var | None) -> str | None:
    """``value_problem``, once per (name, scalar value): the hosts of a large inventory share their values."""
    kind = type(value)
    if kind not in _SCALARS:  # exact types only: a SecretText or a failed template is checked each time
        return value_problem(name, value, var)
    return _scalar_problem(name, kind, value, var)


@functools.lru_cache(maxsize=8192)
def _scalar_problem(name: str, kind: type, value, var: Var | None) -> str | None:
    return value_problem(name, value, var)

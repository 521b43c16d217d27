"""Variables of the haproxy role: computed server lists and sanity checks of the defaults.

Every value written into ``templates/haproxy/haproxy.cfg.j2`` comes from
``DEFAULTS`` (``haproxy_defaults.py``) and can be overridden in hosts.yaml (all vars, group vars or the
haproxy host's vars) or on the command line.

The upstream servers are read from the inventory groups of the two services
(``services.BACKEND_API.group`` and ``services.STREAM_SERVER.group``); a missing
(or empty) group falls back to the static lists ``haproxy_backend_api_fallback``
/ ``haproxy_stream_server_fallback`` so the role also renders in isolation. A
fallback is announced with one warning line naming the missing group, and
``haproxy_fallback: refuse`` makes it an error.

``validate_vars`` catches obviously bad values before anything is uploaded;
``haproxy -c`` on the host remains the final judge of the rendered file.
"""

from __future__ import annotations

import ipaddress
import re

from .. import values
from ..services import BACKEND_API, STREAM_SERVER
from .haproxy_defaults import DEFAULTS  # noqa: F401 - the defaults live apart; callers read them here too

BALANCE_HELP = "roundrobin, static-rr, leastconn, first, source, uri, hdr(...), random, url_param, rdp-cookie, hash"
_SIMPLE_ALGORITHMS = {"roundrobin", "static-rr", "leastconn", "first", "source"}
_URI_OPTIONS = {"whole", "path-only"}
_TIME = re.compile(r"^([0-9]+)(us|ms|s|m|h|d)?\Z")  # ASCII digits: HAProxy reads no other
_TIME_UNIT_MS = {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1}
_SERVER_NAME = re.compile(r"^[A-Za-z0-9_.:-]+\Z")
_TOKEN = re.compile(r"^[A-Za-z0-9_.-]+\Z")
RETRY_ON_KEYWORDS = {
    "none", "conn-failure", "empty-response", "junk-response", "response-timeout",
    "0rtt-rejected", "all-retryable-errors", "401", "403", "404", "408", "425",
    "500", "501", "502", "503", "504",
}
HTTP_REUSE_MODES = {"never", "safe", "aggressive", "always"}
OBSERVE_MODES = {"layer4", "layer7"}
ON_ERROR_MODES = {"fastinter", "fail-check", "sudden-death", "mark-down"}
HASH_TYPES = {"map-based", "consistent"}


def _servers_from_group(inventory, group: str, port_var: str, default_port) -> list:
    """One {name, address, port} per inventory host of ``group``, in file order."""
    return [
        {
            "name": host.name,
            "address": host.vars.get("address"),
            "port": host.vars.get(port_var, default_port),
        }
        for host in inventory.group(group)
    ]


def _upstream(inventory, group: str, port_var: str, default_port, fallback) -> tuple:
    """Servers of ``group``, or the static fallback when the group is missing or empty."""
    if inventory is not None and inventory.has_group(group) and inventory.group(group):
        return _servers_from_group(inventory, group, port_var, default_port), "inventory"
    return [dict(server) for server in fallback], f"fallback (no hosts in group '{group}')"


def template_vars(host, inventory) -> dict:
    """The variables the haproxy template renders with, for ``host``.

    The host's variables over ``DEFAULTS``, plus ``api_servers`` and
    ``stream_servers`` (lists of {name, address, port}) and where each list came
    from (``api_servers_source`` / ``stream_servers_source``: inventory|fallback).
    """
    variables = host.vars_with(DEFAULTS)
    variables["api_servers"], variables["api_servers_source"] = _upstream(
        inventory, BACKEND_API.group, "backend_api_listen_port",
        variables["haproxy_backend_api_port"], variables["haproxy_backend_api_fallback"],
    )
    variables["stream_servers"], variables["stream_servers_source"] = _upstream(
        inventory, STREAM_SERVER.group, "stream_server_listen_port",
        variables["haproxy_stream_server_port"], variables["haproxy_stream_server_fallback"],
    )
    budgets = variables["haproxy_api_route_timeouts"]
    # HAProxy runs every matching set-timeout rule and the last one wins: shortest prefix first.
    variables["api_route_timeouts"] = sorted(budgets.items(), key=lambda item: (len(str(item[0])), str(item[0]))) \
        if isinstance(budgets, dict) else []
    return variables


# --- validation ----------------------------------------------------------------

def balance_problem(name: str, value) -> str | None:
    """Why ``value`` is not a valid ``balance`` line argument, or None."""
    words = str(value).split()
    algorithm = words[0] if words else ""
    options = words[1:]
    if algorithm in _SIMPLE_ALGORITHMS or re.fullmatch(r"random(\([0-9]+\))?", algorithm):
        if not options:
            return None
    elif algorithm == "uri" and _uri_options_ok(options):
        return None
    elif algorithm == "url_param" and options and len(options) <= 2 and all(_TOKEN.match(o) for o in options):
        return None
    elif re.fullmatch(r"hdr\([A-Za-z0-9_-]+\)", algorithm) and options in ([], ["use_domain_only"]):
        return None
    elif re.fullmatch(r"rdp-cookie(\([A-Za-z0-9_-]+\))?", algorithm) and not options:
        return None
    elif algorithm == "hash" and len(options) == 1 and re.fullmatch(r"[a-z][a-z0-9_.,()/-]*", options[0]):
        return None
    return f"{name}: {str(value)!r} is not a balance algorithm ({BALANCE_HELP})"


def _uri_options_ok(options: list) -> bool:
    """``uri`` takes whole, path-only, len <n> and depth <n>."""
    index = 0
    while index < len(options):
        option = options[index]
        if option in _URI_OPTIONS:
            index += 1
        elif option in ("len", "depth") and index + 1 < len(options) and re.fullmatch(r"[0-9]{1,9}", options[index + 1]):
            index += 2
        else:
            return False
    return True


def _time_problem(name: str, value) -> str | None:
    if not _TIME.match(str(value)):
        return f"{name}: {value!r} is not an HAProxy time (a number with an optional unit us, ms, s, m, h, d)"
    return None


def time_ms(value) -> float:
    """An HAProxy time (``1500``, ``500ms``, ``2s``; no unit means ms) in milliseconds."""
    number, unit = _TIME.match(str(value)).groups()
    return int(number) * _TIME_UNIT_MS[unit]


def _old_worker_lifetime_problem(v: dict) -> str | None:
    """hard-stop-after cuts whatever the old worker still holds: it must outlast a keep-alive
    connection's idle time and a request's server time, or a reload cuts those too."""
    names = ("haproxy_hard_stop_after", "haproxy_timeout_http_keep_alive", "haproxy_timeout_server")
    if not all(_TIME.match(str(v[name])) for name in names):
        return None  # the time checks name the value that does not parse
    longest = max(names[1:], key=lambda name: time_ms(v[name]))
    if time_ms(v["haproxy_hard_stop_after"]) <= time_ms(v[longest]):
        return (f"haproxy_hard_stop_after: {v['haproxy_hard_stop_after']} must be longer than {longest} "
                f"({v[longest]}): a reload's old worker would cut what it still serves")
    return None


def _route_timeout_problems(v: dict) -> list:
    """Each budget: a path prefix, an HAProxy time above zero and no longer than timeout server."""
    name, budgets = "haproxy_api_route_timeouts", v["haproxy_api_route_timeouts"]
    if not isinstance(budgets, dict):
        return [f"{name}: must be a mapping of path prefix to timeout, e.g. {{/api/v1/search: 800ms}}"]
    problems = []
    for prefix, budget in budgets.items():
        label = f"{name}[{prefix}]"
        problem = _problem(values.url_path, label, prefix) or _time_problem(label, budget)
        if problem:
            problems.append(problem)
        elif _TIME.match(str(v["haproxy_timeout_server"])) and \
                not 0 < time_ms(budget) <= time_ms(v["haproxy_timeout_server"]):
            problems.append(f"{label}: {budget} must be above zero and no longer than haproxy_timeout_server "
                            f"({v['haproxy_timeout_server']}); a budget only ever shortens the wait")
    return problems


def _positive_int_problem(name: str, value, maximum: int | None = None) -> str | None:
    if isinstance(value, bool) or not re.fullmatch(r"[0-9]{1,18}", str(value)) or int(value) < 1 or (maximum and int(value) > maximum):
        upper = f" up to {maximum}" if maximum else ""
        return f"{name}: {value!r} must be a whole number from 1{upper}"
    return None


def _choice_problem(name: str, value, allowed: set) -> str | None:
    if value not in allowed:
        return f"{name}: {value!r} is not one of {', '.join(sorted(map(str, allowed)))}"
    return None


def _servers_problems(name: str, servers) -> list:
    """Each upstream server needs a valid name, an address and a port."""
    if not isinstance(servers, list) or not servers:
        return [f"{name}: needs at least one server {{name, address, port}}"]
    problems, seen = [], set()
    for index, server in enumerate(servers):
        if not isinstance(server, dict):
            problems.append(f"{name}[{index}]: must be a mapping {{name, address, port}}")
            continue
        label = f"{name}[{index}] ({server.get('name', '?')})"
        server_name = str(server.get("name", ""))
        if not _SERVER_NAME.match(server_name):
            problems.append(f"{label}: name {server_name!r} must use letters, digits, '-', '_', '.', ':'")
        elif server_name in seen:
            problems.append(f"{label}: name {server_name!r} appears twice; cookies and tracking need unique names")
        seen.add(server_name)
        if not server.get("address"):
            problems.append(f"{label}: no address; HAProxy needs one for its server line: set 'address' (or ansible_host) on that host")
        elif _problem(values.hostname, "address", server["address"]):
            problems.append(f"{label}: address {str(server['address'])[:60]!r} is not a host name or IP address")
        problem = _positive_int_problem(f"{label} port", server.get("port"), 65535)
        if problem:
            problems.append(problem)
    return problems


def _problem(check, name, *args) -> str | None:
    """Run one ``values`` check; its message, or None when the value fits."""
    try:
        check(name, *args)
        return None
    except values.InvalidValue as exc:
        return str(exc)


def _rendered_strings(variables: dict):
    """Every (name, string) the template may render, nested lists and mappings included."""
    def walk(name, value):
        if isinstance(value, str):
            yield name, value
        elif isinstance(value, dict):
            for key, item in value.items():
                yield from walk(f"{name}.{key}", item)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                yield from walk(f"{name}[{index}]", item)
    for name in sorted(variables):
        if name.startswith("haproxy_") or name in ("api_servers", "stream_servers"):
            yield from walk(name, variables[name])


def _socket_problems(v: dict) -> list:
    """The admin socket is a root-only path; the TCP stats socket is read-only and loopback unless allowed."""
    problems = [
        _problem(values.absolute_path, "haproxy_admin_socket", v["haproxy_admin_socket"]),
        _problem(values.absolute_path, "haproxy_server_state_file", v["haproxy_server_state_file"]),
        _choice_problem("haproxy_stats_socket_level", v["haproxy_stats_socket_level"], {"user", "operator"}),
        _choice_problem("haproxy_stats_allow_remote", v["haproxy_stats_allow_remote"], {True, False}),
        _choice_problem("haproxy_fallback", v["haproxy_fallback"], {"fallback", "refuse"}),
        _problem(values.seconds, "haproxy_reload_timeout", v["haproxy_reload_timeout"], 0.5, 120),
    ]
    try:
        address = ipaddress.ip_address(str(v["haproxy_stats_socket_address"]))
    except ValueError:
        problems.append(f"haproxy_stats_socket_address: {str(v['haproxy_stats_socket_address'])[:60]!r} is not an IP address")
    else:
        if not address.is_loopback and v["haproxy_stats_allow_remote"] is not True:
            problems.append(f"haproxy_stats_socket_address: {address} is not loopback; the stats socket would be "
                            "reachable from the network (set haproxy_stats_allow_remote: true if that is meant)")
    metrics = str(v["haproxy_metrics_bind"] or "")
    if metrics:
        address, _, port = metrics.rpartition(":")
        if not address or _problem(values.hostname, "haproxy_metrics_bind", address) or not re.fullmatch(r"[0-9]{1,5}", port) \
                or not 0 < int(port) < 65536:
            problems.append(f"haproxy_metrics_bind: {metrics[:60]!r} must be ADDRESS:PORT (or empty to disable)")
    problems.append(_problem(values.url_path, "haproxy_metrics_path", v["haproxy_metrics_path"]))
    return problems


def validate_vars(variables: dict) -> list:
    """Obviously bad values, one readable line each (empty list: nothing seen)."""
    v = variables
    control = [f"{name}: contains a control character (newline, tab, ...); one printable line only"
               for name, text in _rendered_strings(v) if values.CONTROL_CHARACTER.search(text)]
    if control:
        return control  # nothing else is worth judging once a value could add a line
    checks = [*_socket_problems(v),
        _problem(values.absolute_path, "haproxy_chroot", v["haproxy_chroot"]),
        _problem(values.user_name, "haproxy_user", v["haproxy_user"]),
        _problem(values.user_name, "haproxy_group", v["haproxy_group"]),
        _problem(values.token, "haproxy_log_facility", v["haproxy_log_facility"]),
        *[_problem(values.token, "haproxy_failover_l7_retry_methods", m) for m in v["haproxy_failover_l7_retry_methods"]],
        None if not v["haproxy_bind_address"] else _problem(values.hostname, "haproxy_bind_address", v["haproxy_bind_address"]),
        balance_problem("haproxy_api_balance", v["haproxy_api_balance"]),
        balance_problem("haproxy_stream_balance", v["haproxy_stream_balance"]),
        _choice_problem("haproxy_stream_hash_type", v["haproxy_stream_hash_type"], HASH_TYPES),
        _positive_int_problem("haproxy_maxconn", v["haproxy_maxconn"]),
        _positive_int_problem("haproxy_http_port", v["haproxy_http_port"], 65535),
        _positive_int_problem("haproxy_https_port", v["haproxy_https_port"], 65535),
        _positive_int_problem("haproxy_stats_socket_port", v["haproxy_stats_socket_port"], 65535),
        _positive_int_problem("haproxy_check_fall", v["haproxy_check_fall"]),
        _positive_int_problem("haproxy_check_rise", v["haproxy_check_rise"]),
        _positive_int_problem("haproxy_health_expect_status", v["haproxy_health_expect_status"], 599),
        _choice_problem("haproxy_failover_tuning", v["haproxy_failover_tuning"], {True, False}),
        _choice_problem("haproxy_idle_close_on_response", v["haproxy_idle_close_on_response"], {True, False}),
        _old_worker_lifetime_problem(v),
    ]
    checks += [_time_problem(name, v[name]) for name in sorted(v) if _is_time_var(name)]
    if v["haproxy_failover_tuning"] is True:
        checks += [
            _choice_problem("haproxy_failover_observe", v["haproxy_failover_observe"], OBSERVE_MODES),
            _choice_problem("haproxy_failover_on_error", v["haproxy_failover_on_error"], ON_ERROR_MODES),
            _choice_problem("haproxy_failover_http_reuse", v["haproxy_failover_http_reuse"], HTTP_REUSE_MODES),
            _positive_int_problem("haproxy_failover_error_limit", v["haproxy_failover_error_limit"]),
            _positive_int_problem("haproxy_failover_retries", v["haproxy_failover_retries"]),
            _positive_int_problem("haproxy_failover_redispatch_interval", v["haproxy_failover_redispatch_interval"]),
        ]
        unknown = [word for word in str(v["haproxy_failover_retry_on"]).split() if word not in RETRY_ON_KEYWORDS]
        if unknown or not str(v["haproxy_failover_retry_on"]).split():
            checks.append(
                f"haproxy_failover_retry_on: {' '.join(unknown) or 'empty'!s} not valid; "
                f"use {', '.join(sorted(RETRY_ON_KEYWORDS))}"
            )
    for name in ("haproxy_cookie_name",):
        if not _TOKEN.match(str(v[name])):
            checks.append(f"{name}: {v[name]!r} must be a plain token (letters, digits, '_', '-', '.')")
    for name in ("haproxy_health_path", "haproxy_monitor_uri", "haproxy_api_path_prefix", "haproxy_api_ws_path", "haproxy_stream_path_prefix"):
        checks.append(_problem(values.url_path, name, v[name]))
    if v["haproxy_stream_health_path"]:
        checks.append(_problem(values.url_path, "haproxy_stream_health_path", v["haproxy_stream_health_path"]))
    cert = str(v["haproxy_tls_cert_path"] or "")
    if cert:
        checks.append(_problem(values.absolute_path, "haproxy_tls_cert_path", cert))
    checks += _route_timeout_problems(v)
    checks += _servers_problems("api_servers", v.get("api_servers"))
    checks += _servers_problems("stream_servers", v.get("stream_servers"))
    return [problem for problem in checks if problem]


def _is_time_var(name: str) -> bool:
    """Variables holding an HAProxy time value, by their name."""
    return name.startswith(("haproxy_timeout_", "haproxy_failover_timeout_", "haproxy_check_inter")) or name in (
        "haproxy_stats_timeout", "haproxy_hard_stop_after", "haproxy_slowstart",
        "haproxy_failover_inter", "haproxy_failover_fastinter", "haproxy_failover_downinter",
    )

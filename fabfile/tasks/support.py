"""What every task shares: its flags, its errors and exit codes, loading the inventory, running a play.

Bad input (inventory, templates, values, flags) becomes one ``error:`` line and
exit 2 before any host is touched; a failed step exits 1 after the recap;
SIGINT, SIGTERM and SIGHUP exit 130, 143 and 129 once the task has made its
hosts safe (see ``exits``).
"""

from __future__ import annotations

import functools
import signal
import sys

import invoke
from invoke.exceptions import Exit

from .. import exits
from ..exits import StepError, UsageError
from ..incus import IncusError
from ..inventory import InventoryError, load_inventory
from ..operations import PreconditionFailed
from ..output import Masker, Output, write_report
from ..paths import resolve
from ..services import BALANCER_GROUP
from ..templating import TemplateError
from ..transports import TransportError
from ..values import InvalidValue

COMMON_HELP = {
    "inventory": "inventory file in Ansible's YAML shape (default: invoke.yaml's veza.inventory, hosts.yaml)",
    "limit": "only these hosts or groups, comma-separated (NAME[,NAME])",
    "check": "probe only: say what would change, change nothing",
    "diff": "show what would change in files (keys only for files holding secrets)",
    "report": "also write the results as JSON to this path",
    "set": "KEY=VALUE variable override, repeatable; beats every inventory value",
    "forks": "hosts worked on at once (default 10)",
}

BAD_INPUT = (UsageError, InventoryError, TemplateError, InvalidValue, PreconditionFailed, IncusError)
FAILED_STEP = (TransportError, StepError)


class Task(invoke.Task):
    """A task equal only to itself.

    Invoke drops a task named twice in one call when it *equals* an earlier one, and
    its equality compares names and code: ``api.setup`` and ``stream.setup`` are two
    configurations of one function, so ``inv api.setup stream.setup`` would silently
    skip the second. Identity equality makes every named task run.
    """

    def __eq__(self, other):
        return self is other

    def __hash__(self):
        return id(self)


task = functools.partial(invoke.task, klass=Task)


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so every ``except KeyboardInterrupt`` cleanup runs."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def exit_code_of(interrupt: KeyboardInterrupt) -> int:
    return 128 + interrupt.signum if isinstance(interrupt, Interrupted) else exits.INTERRUPTED_SIGINT


def user_errors(task_body):
    """One ``error:`` line and the table's exit code for every known failure; no traceback."""

    @functools.wraps(task_body)
    def wrapper(*args, **kwargs):
        previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)}
        try:
            return task_body(*args, **kwargs)
        except BAD_INPUT as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise Exit(code=exits.BAD_INPUT) from None
        except FAILED_STEP as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise Exit(code=exits.FAILED) from None
        except KeyboardInterrupt as interrupt:
            print(f"interrupted ({interrupt or 'SIGINT'}); hosts were left as reported above", file=sys.stderr)
            raise Exit(code=exit_code_of(interrupt)) from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    return wrapper


def parse_set(values) -> dict:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values read as YAML scalars)."""
    import yaml

    parsed = {}
    for item in values or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set '{item}': expected KEY=VALUE")
        try:
            parsed[key.strip()] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            parsed[key.strip()] = raw
    return parsed


def inventory_path(c, inventory: str | None) -> str:
    """``--inventory``, else invoke.yaml's ``veza.inventory``; relative paths from the repo root."""
    default = c.config.get("veza", {}).get("inventory", "hosts.yaml") if c is not None else "hosts.yaml"
    return str(resolve(inventory, default))


def select(c, inventory: str | None, group: str, limit: str | None, set_values=None):
    """Load the inventory and pick the hosts of ``group`` narrowed by ``--limit``."""
    loaded = load_inventory(inventory_path(c, inventory), cli_vars=parse_set(set_values))
    hosts = loaded.select(group, limit)
    check_host_names(hosts)
    return loaded, hosts


def check_host_names(hosts) -> None:
    """Host and Incus instance names that could become an option or add a line: refused (exit 2) up front."""
    from ..incus import instance_ref
    from ..values import CONTROL_CHARACTER

    for host in hosts:
        if not host.name or host.name.startswith("-") or CONTROL_CHARACTER.search(host.name) or any(
                ch.isspace() for ch in host.name):
            raise UsageError(f"host name {host.name!r}: must not start with '-' or contain whitespace or control characters")
        if host.connection == "incus":
            try:
                instance_ref(host.vars.get("incus_name", host.name), host.vars.get("incus_remote"))
            except IncusError as exc:
                raise UsageError(f"host '{host.name}': {exc}") from None


def balancers(loaded) -> list:
    """Every host of the balancer group (one, or a keepalived pair): runtime-API actions apply to each."""
    from ..lb_pair import check_group_size

    hosts = loaded.group(BALANCER_GROUP)
    if not hosts:
        raise UsageError(f"{loaded.path}: no '{BALANCER_GROUP}' group; HAProxy's runtime API is reached through its hosts")
    check_group_size(BALANCER_GROUP, hosts)
    return hosts


def lb_pair(loaded):
    """The checked keepalived pair (``lb_pair.Pair``), or None when the inventory sets no ``lb_vip``."""
    from ..lb_pair import pair_settings

    return pair_settings(BALANCER_GROUP, balancers(loaded), list(loaded.hosts.values()))


def lb_address(loaded) -> str:
    """Where clients reach HAProxy: the VIP when there is one, else the first balancer's address."""
    pair = lb_pair(loaded)
    if pair is not None:
        return pair.vip
    first = balancer(loaded)
    if not first.address:
        raise UsageError(f"{loaded.path}: haproxy host '{first.name}' has no address; set 'address'")
    return first.address


def balancer_set(loaded):
    """A ``BalancerSet`` over every balancer: the rollout and the tests drive all of them as one."""
    from ..balancers import BalancerSet

    return BalancerSet([runtime_api(host) for host in balancers(loaded)])


def balancer(loaded):
    """The balancer group's first host: where the LB address lives."""
    return balancers(loaded)[0]


def lock_balancer(loaded):
    """Where the deploy lock and the audit trail live: the first balancer that answers, in inventory order.

    With the first balancer of a pair down, haproxy.setup/keepalived.setup of the other still
    takes a lock. Two workstations that disagree on which balancer answers could each take one;
    a deploy cannot run on that (its runtime actions need every balancer to answer), so the
    window is limited to setup runs while a balancer is down.
    """
    from ..shell import Command
    from ..transports import connect

    hosts = balancers(loaded)
    if len(hosts) == 1:
        return hosts[0]
    for host in hosts:
        try:
            if connect(host).run(Command("true", timeout=5), warn=True).exited == 0:
                return host
        except (TransportError, OSError):
            continue
    return hosts[0]


def runtime_api(host):
    """The admin runtime API of ``host``, at the socket its haproxy.cfg renders."""
    from ..haproxy_runtime import RuntimeAPI
    from ..roles.haproxy_vars import DEFAULTS
    from ..transports import connect

    return RuntimeAPI(connect(host), host.vars_with(DEFAULTS)["haproxy_admin_socket"])


def secrets_for(hosts, path: str | None):
    """The secrets file from ``--secrets`` or the inventory's ``secrets_file`` (relative to the repo root)."""
    from ..secrets_file import load_secrets

    chosen = path or (hosts[0].vars.get("secrets_file") if hosts else None)
    if not chosen:
        raise UsageError("no secrets file: pass --secrets PATH or set secrets_file in the inventory")
    return load_secrets(str(resolve(chosen)))


def forks_value(forks) -> int:
    from ..values import integer

    return integer("--forks", forks, 1, 256)


def check_placement(loaded) -> None:
    """The placement rules (``placement.py``) for the balancer pair and every service pool; exit 2."""
    from ..placement import check_placement as check
    from ..services import SERVICES

    check(loaded, [(f"{config.pool} pool", config.group) for config in SERVICES.values()])


def per_host_floor(loaded, config):
    """(server -> host, ``deploy_min_up_per_host``) for a pool's rollout; InvalidValue: exit 2."""
    from ..placement import host_of, per_host_floor as floor

    pool = loaded.group(config.group)
    return {host.name: host_of(host) for host in pool}, floor(pool)


def restart_floor(loaded, config) -> tuple:
    """(pool size, floor) of a service's pool: ``deploy_min_up`` (N or P% of the pool, default 1), the
    same floor deploys keep; checked before anything (InvalidValue: exit 2)."""
    from ..values import InvalidValue, count_or_percent

    pool = loaded.group(config.group)
    if not pool:
        return 0, 0
    spec = pool[0].vars_with(config.defaults).get("deploy_min_up", 1)
    floor = count_or_percent("deploy_min_up", spec, len(pool), low=0)
    if len(pool) > 1 and floor >= len(pool):
        raise InvalidValue(f"deploy_min_up: {spec} keeps all {len(pool)} servers of {config.pool} UP, so no restart "
                           f"can happen; lower it to at most {len(pool) - 1}")
    return len(pool), floor


def play(title, loaded, hosts, roles, *, check=False, diff=False, report=None, extra_secrets=(), forks=10, guard=None,
         roles_for=None, floors=()):
    """Plan every host (failing before any change), run, recap, report; exit 1 on failure.

    ``guard()``, when given, is entered after planning and held while the play runs (the deploy lock).
    ``roles_for(host)``, when given, picks each host's roles (``inv site.setup``); ``floors`` lists
    ``(group, pool size, floor)``: the handlers (restarts) of a group's hosts run at most
    (pool size - floor) at once.
    """
    import contextlib

    from ..runner import plan_hosts, restart_slots, run_play

    forks = forks_value(forks)
    if roles_for is None:
        plans = plan_hosts(hosts, roles, loaded)
    else:
        plans = [plan for host in hosts for plan in plan_hosts([host], roles_for(host), loaded)]
    for group, pool_size, floor in floors:
        restart_slots(plans, group, pool_size, floor)
    masker = masker_for(hosts, extra_secrets)
    result = None
    if guard and not check and not diff:
        # Probe first without the lock (probes change nothing): a no-op re-run is then one round trip
        # per host, with no lock taken. Anything to change (or a pending handler) takes the lock and
        # runs the play for real, probing again under it.
        import io

        captured = io.StringIO()
        probe = run_play(title, plans, check=True, output=Output(masker, captured), forks=forks)
        if not probe.failed and not any(step.status == "changed" for step in probe.steps):
            probe.check = False
            sys.stdout.write(captured.getvalue().replace(
                f"== {title} (check mode: nothing is changed)", f"== {title} (nothing to change: no lock taken)", 1))
            sys.stdout.flush()
            result = probe
    if result is None:
        with guard() if guard and not check else contextlib.nullcontext():
            result = run_play(title, plans, check=check, diff=diff, output=Output(masker), forks=forks)
    if report:
        write_report(report, result.to_json(), masker)
    if result.failed:
        raise Exit(code=exits.FAILED)
    return result


def masker_for(hosts, extra=()) -> Masker:
    """A masker for the secret-named variables of ``hosts`` plus ``extra`` values (the secrets file's)."""
    from ..inventory import is_secret_name

    values = list(extra)
    for host in hosts:
        secret_vars = host.vars.get("secret_vars", ())
        values += [v for k, v in host.vars.items() if is_secret_name(k, secret_vars) and isinstance(v, (str, int))]
    return Masker(values)

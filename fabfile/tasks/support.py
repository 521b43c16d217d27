"""What every task shares: its flags, its errors and exit codes, loading the inventory, wiring the engines.

Bad input (inventory, templates, values, flags) becomes one ``error:`` line and
exit 2 before any host is touched; a failed step exits 1 after the recap;
SIGINT, SIGTERM and SIGHUP exit 130, 143 and 129 once the task has made its
hosts safe (see ``exits``).
"""

from __future__ import annotations

import copy
import functools
import inspect
import signal
import sys

import invoke
from invoke.exceptions import Exit

from .. import exits
from ..exits import StepError, UsageError
from ..masking import safe_line, shown
from ..output import Masker, printable_streams
from ..paths import resolve
# The inventory loader, the transports, the schema and the lock are imported when a task runs, not when
# `inv --list` builds the collection (they were over half of its start-up).

COMMON_HELP = {
    "inventory": "inventory source: a YAML or INI file or a folder of them, with group_vars/ and host_vars/ beside; "
                 "repeatable or comma-separated, merged in order (default: invoke.yaml's veza.inventory, hosts.yaml)",
    "limit": "only these hosts or groups, comma-separated (NAME[,NAME])",
    "check": "probe only: say what would change, change nothing",
    "diff": "show what would change in files (keys only for files holding secrets)",
    "report": "also write the results as JSON to this path",
    "set": "KEY=VALUE variable override, repeatable; beats every inventory value",
    "forks": "hosts worked on at once (default 10)",
}

# The only short flags, the same letter for the same flag in every task (Ansible's where it has one: -i, -l,
# -C, -D, -e, -f). Every other flag is long only: Invoke's automatic short flags gave -b to --binary in one
# task and to --batch in its sibling, and "-" (a dash for an underscore) to --post-path.
SHORT_FLAGS = {"inventory": "i", "limit": "l", "check": "C", "diff": "D", "set": "e", "forks": "f",
               "binary": "b", "message": "m", "report": "r"}



def known_failures():
    """(bad input, failed step, lock held): the exception classes a task's failure is sorted by."""
    from ..deploy.locking import LockHeld
    from ..incus import IncusError
    from ..inventory import InventoryError
    from ..operations import PreconditionFailed
    from ..templating import TemplateError
    from ..transports import TransportError
    from ..values import InvalidValue

    return ((UsageError, InventoryError, TemplateError, InvalidValue, PreconditionFailed, IncusError),
            (TransportError, StepError), LockHeld)


class Task(invoke.Task):
    """A task equal only to itself.

    Invoke drops a task named twice in one call when it *equals* an earlier one, and
    its equality compares names and code: ``api.setup`` and ``stream.setup`` are two
    configurations of one function, so ``inv api.setup stream.setup`` would silently
    skip the second. Identity equality makes every named task run.
    """

    def __init__(self, body, *args, iterable=None, help=None, **kwargs):
        # Every task that reads the inventory takes several sources (--inventory is repeatable) and
        # Ansible's vault options, as ansible-playbook does.
        if "inventory" in inspect.signature(body).parameters:
            body = _with_vault_options(body)
            iterable = [*(iterable or ()), "inventory", *VAULT_ITERABLE]
            help = {**(help or {}), **VAULT_HELP}
        super().__init__(body, *args, iterable=iterable, help=help, **kwargs)

    def __eq__(self, other):
        return self is other

    def __deepcopy__(self, memo):
        """Invoke copies every task of the collection deeply on each run (``Collection.from_module``): the
        function and its ``inspect.Signature`` (immutable) are shared, the rest (help, flag lists) copied
        as before. Copying the signatures was half of building the collection."""
        clone = copy.copy(self)
        memo[id(self)] = clone
        clone.__dict__.update({name: copy.deepcopy(value, memo) for name, value in vars(self).items()
                               if name not in _SHARED_WHEN_COPIED})
        return clone

    def arg_opts(self, name, default, taken_names):
        """Numeric flags are taken as text: the project's parser (``flags``, ``values``) reads them, so a typo
        is one line and exit 2, never Invoke's ``int()`` traceback. Short flags come from ``SHORT_FLAGS``
        only (the tasks are declared with ``auto_shortflags=False``)."""
        opts = super().arg_opts(name, default, taken_names)
        if opts.get("kind") in (int, float):
            opts["kind"] = str
        short = SHORT_FLAGS.get(name)
        if short and short not in taken_names and short not in opts["names"]:
            opts["names"] = [*opts["names"], short]
        return opts

    def __hash__(self):
        return id(self)


_SHARED_WHEN_COPIED = ("body", "__wrapped__", "__signature__")
task = functools.partial(invoke.task, klass=Task, auto_shortflags=False)

VAULT_HELP = {
    "vault_password_file": "Ansible Vault password file (an executable one is run and prints the password); repeatable",
    "vault_id": "Ansible Vault secret LABEL@SOURCE (SOURCE: a password file, a script or 'prompt'); repeatable",
    "ask_vault_pass": "ask for the Ansible Vault password (not echoed)",
}
VAULT_ITERABLE = ("vault_password_file", "vault_id")


def _with_vault_options(body):
    """``body`` taking --vault-password-file/--vault-id/--ask-vault-pass too; they go to the inventory's vault."""

    @functools.wraps(body)
    def wrapper(*args, vault_password_file=None, vault_id=None, ask_vault_pass=False, **kwargs):
        from ..inventory import vault

        vault.use_options(vault_ids=vault_id, password_files=vault_password_file, ask=ask_vault_pass)
        return body(*args, **kwargs)

    signature = inspect.signature(body)
    extra = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
             for name, default in (("vault_password_file", None), ("vault_id", None), ("ask_vault_pass", False))]
    wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])
    return wrapper


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
            with printable_streams():
                return _run_checked(task_body, args, kwargs)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    return wrapper


def _run_checked(task_body, args, kwargs):
    """The task body; its known failures become one ``error:`` line and the table's exit code."""
    try:
        check_common_flags(kwargs)
        return task_body(*args, **kwargs)
    except KeyboardInterrupt as interrupt:
        print(f"interrupted ({interrupt or 'SIGINT'}); hosts were left as reported above", file=sys.stderr)
        raise Exit(code=exit_code_of(interrupt)) from None
    except Exception as exc:
        # Sorted only when something failed: the classes live in modules (transports, locking...) that a
        # task such as inventory.show never imports otherwise.
        bad_input, failed_step, lock_held = known_failures()
        if isinstance(exc, bad_input):
            print(f"error: {safe_line(exc)}", file=sys.stderr)
            raise Exit(code=exits.BAD_INPUT) from None
        if isinstance(exc, failed_step):
            print(f"error: {safe_line(exc)}", file=sys.stderr)
            raise Exit(code=exits.FAILED) from None
        if isinstance(exc, lock_held):
            print(f"locked: {safe_line(exc)}", file=sys.stderr)
            raise Exit(code=exits.LOCKED) from None
        raise


def check_common_flags(flags: dict) -> None:
    """The flags many tasks share, checked before the task reads anything: --forks, and the output
    paths (a report that cannot be written is refused now, exit 2, not after the play did its work)."""
    from ..flags import output_folder, output_path

    if "forks" in flags:
        forks_value(flags["forks"])
    for flag in ("report", "plot"):
        output_path(flag, flags.get(flag))
    output_folder("out", flags.get("out"))


def parse_set(values) -> dict:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values read as YAML scalars)."""
    import yaml

    from ..schema import check_set_keys

    parsed = {}
    for item in values or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {shown(item)}: expected NAME=VALUE")
        try:
            parsed[key.strip()] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            parsed[key.strip()] = raw
    check_set_keys(parsed)
    return parsed


def inventory_path(c, inventory) -> str:
    """``--inventory`` (one value or the list of repeated ones, each maybe comma-separated), else
    invoke.yaml's ``veza.inventory``; relative paths from the repo root; several come back comma-separated."""
    from ..inventory.sources import split_sources

    default = c.config.get("veza", {}).get("inventory", "hosts.yaml") if c is not None else "hosts.yaml"
    given = split_sources(inventory) or split_sources(default)
    return ",".join(str(resolve(path)) for path in given)


def load(c, inventory, set_values=None):
    """The inventory with ``--set`` applied; every value under a secret name (any host, any depth)
    registered for masking, so no error line or output of this run shows it."""
    from ..inventory import load_inventory, register_secrets

    loaded = load_inventory(inventory_path(c, inventory), cli_vars=parse_set(set_values))
    register_secrets(loaded.hosts.values())
    return loaded


def select(c, inventory: str | None, group: str, limit: str | None, set_values=None):
    """Load the inventory and pick the hosts of ``group`` narrowed by ``--limit``."""
    loaded = load(c, inventory, set_values)
    hosts = loaded.select(group, limit)
    check_host_names(hosts)
    refuse_bad_hosts(hosts)
    return loaded, hosts


# What a task reads of a balancer it reaches without targeting it (runtime API, lock, audit): its
# connection and the balancer settings. A service variable there (say an env value templated from
# group_names) is not read, as Ansible would not template it for a host outside the play.
BALANCER_READS = ("address", "connection", "incus_", "ssh_", "become", "ansible_", "haproxy_", "lb_",
                  "keepalived_", "deploy_", "secret_vars")


def refuse_bad_hosts(hosts, read=None) -> None:
    """The variable schema's verdict on each targeted host's resolved variables (inventory + --set): a host
    with a problem makes the task refuse before anything runs (exit 2); --limit away from it works.
    ``read``: only the variable names it accepts are checked (hosts reached but not targeted)."""
    from ..schema import host_problems
    from ..values import InvalidValue

    for host in hosts:
        problems = host_problems(host.vars, read)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise InvalidValue(f"host '{host.name}': {problems[0]}{more}")


def check_host_names(hosts) -> None:
    """Host and Incus instance names that could become an option or add a line: refused (exit 2) up front."""
    from ..incus import IncusError, instance_ref
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


def topology(loaded):
    """The ``Topology`` of ``loaded`` (balancers, VIP, runtime APIs, lock and audit host), built once per task."""
    from ..topology import Topology

    topology = Topology.of(loaded)
    # Runtime API, lock and audit reach these hosts too: what they read of them is checked.
    refuse_bad_hosts(topology.balancers, read=lambda name: name.startswith(BALANCER_READS))
    return topology



def floor_of(loaded, config):
    """The ``CapacityFloor`` of a service's pool (its whole group, whatever ``--limit`` picked)."""
    from ..capacity import CapacityFloor

    pool = loaded.group(config.group)
    return CapacityFloor.of_pool(config.pool, pool, config.defaults).with_hosts(pool)


def check_placement(loaded) -> None:
    """The placement rules (``placement.py``) for the balancer pair and every service pool; exit 2."""
    from ..placement import check_placement as check
    from ..services import SERVICES

    check(loaded, [(f"{config.pool} pool", config.group) for config in SERVICES.values()])


def secrets_for(hosts, path: str | None):
    """The secrets file from ``--secrets`` or the inventory's ``secrets_file`` (relative to the repo root);
    none when neither is given."""
    from ..secrets_file import Secrets, load_secrets

    chosen = path or (hosts[0].vars.get("secrets_file") if hosts else None)
    if not chosen:  # every secret may come from the inventory's Ansible Vault (secrets_file.with_vault)
        return Secrets({}, None)
    from ..flags import input_file

    return load_secrets(input_file("secrets", str(resolve(chosen)), "secrets file"))


def lock_wait_value(value) -> float:
    """``--lock-wait SECONDS`` (30, 2.5s, 5m; default 0: exit 3 at once when another run holds the lock)."""
    from ..flags import duration

    return duration("lock-wait", value if value is not None else 0)


def guard(loaded, task_name, lock_wait, built=None):
    """The deploy lock for a setup play (``--lock-wait`` checked now), on the control host of ``topology``
    (``built``, or built from ``loaded`` when the play first needs the lock: a no-op run never does)."""
    wait = lock_wait_value(lock_wait)

    def lock():
        from ..deploy.locking import held

        return held(built or topology(loaded), task_name, lock_wait=wait)

    return lock


def forks_value(forks) -> int:
    from ..flags import integer

    return integer("forks", forks, 1, 256)


def play(title, loaded, hosts, roles, *, check=False, diff=False, report=None, extra_secrets=(), forks=10, guard=None,
         roles_for=None, floors=()):
    """``plays.play`` with the task's masker; exit 1 on a failed step (after the recap)."""
    from ..plays import play as run

    result = run(title, loaded, hosts, roles, masker=masker_for(hosts, extra_secrets), check=check, diff=diff,
                 report=report, forks=forks_value(forks), guard=guard, roles_for=roles_for, floors=floors)
    if result.failed:
        raise Exit(code=exits.FAILED)
    return result


def masker_for(hosts, extra=()) -> Masker:
    """A masker for the secret-named variables of ``hosts`` plus ``extra`` values (the secrets file's)."""
    from ..masking import secret_values

    values = list(extra)
    for host in hosts:
        values += secret_values(host.vars, host.vars.get("secret_vars", ()))
    return Masker(values)

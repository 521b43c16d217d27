"""The loader against ``ansible-inventory --list`` (ansible-core 2.19) on tests/inventories/.

Each ``<case>.yaml`` has ``<case>.expected.json`` recorded by ``tests/inventories/record.py``.
A case whose first line is ``# refused: TEXT`` must instead be one InventoryError line containing
TEXT (the documented refusals of the README's Inventory section); every other case must agree with Ansible on
the set of hosts, each host's groups (with ``all`` and ``ungrouped``) and each host's merged vars
(``Host.ansible_vars``, which ``Host.inventory_vars`` extends with our normalised names).
When ``ansible-inventory`` is on PATH the same comparison also runs live.
"""

import datetime
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from fabfile.inventory import InventoryError, load_inventory
from fabfile.inventory.vault import Vault, VaultText

CORPUS = Path(__file__).resolve().parent / "inventories"
# A <case>.yaml is one inventory file; a <case>/ folder an Ansible-shaped repo (sources.txt lists its --inventory values).
CASES = sorted([path.stem for path in CORPUS.glob("*.yaml")] + [path.name for path in CORPUS.iterdir() if path.is_dir()])
# ansible-inventory drops these names from its output (ansible.constants.INTERNAL_STATIC_VARS).
ANSIBLE_INTERNAL_VARS = frozenset({
    "ansible_async_path", "ansible_collection_name", "ansible_config_file", "ansible_dependent_role_names",
    "ansible_diff_mode", "ansible_facts", "ansible_forks", "ansible_inventory_sources", "ansible_limit",
    "ansible_play_batch", "ansible_play_hosts", "ansible_play_hosts_all", "ansible_play_role_names",
    "ansible_playbook_python", "ansible_role_name", "ansible_role_names", "ansible_run_tags", "ansible_skip_tags",
    "ansible_verbosity", "ansible_version", "inventory_dir", "inventory_file", "inventory_hostname",
    "inventory_hostname_short", "groups", "group_names", "hostvars", "playbook_dir", "play_hosts", "role_name",
    "role_names", "role_path", "role_uuid",
})


def sources(case: str) -> list:
    """What a case passes as --inventory: the file, or one value per line of the folder's sources.txt."""
    folder = CORPUS / case
    if not folder.is_dir():
        return [str(CORPUS / f"{case}.yaml")]
    lines = [line.strip() for line in (folder / "sources.txt").read_text().splitlines() if line.strip()]
    return [",".join(str(folder / part) for part in line.split(",")) for line in lines]


def vault_of(case: str) -> Vault:
    """The vault options a folder case gives ansible-inventory: vault-ids.txt (LABEL@FILE lines), vault-password.txt."""
    folder = CORPUS / case
    ids = []
    if (folder / "vault-ids.txt").exists():
        for line in (folder / "vault-ids.txt").read_text().split():
            label, _, source = line.partition("@")
            ids.append(f"{label}@{folder / source}")
    files = [str(folder / "vault-password.txt")] if (folder / "vault-password.txt").exists() else []
    return Vault.from_options(vault_ids=ids, password_files=files, environ={})


def load_case(case: str):
    return load_inventory(sources(case), vault=vault_of(case) if (CORPUS / case).is_dir() else Vault())


def refusal(case: str):
    """The expected error text of a refusal case, else None."""
    if (CORPUS / case).is_dir():
        return None
    first = (CORPUS / f"{case}.yaml").read_text().splitlines()[:1]
    return first[0].split("# refused:", 1)[1].strip() if first and first[0].startswith("# refused:") else None


def as_json(value):
    """A value as ansible-inventory prints it: JSON types, dates in ISO form, !unsafe strings plain."""
    def encode(item):
        if isinstance(item, (datetime.date, datetime.datetime)):
            return item.isoformat()
        if isinstance(item, VaultText):  # an inline !vault value, kept encrypted as ansible-inventory keeps it
            return {"__ansible_vault": item.ciphertext}
        raise TypeError(type(item).__name__)

    def decode(mapping):
        return mapping.get("__ansible_unsafe", mapping) if set(mapping) == {"__ansible_unsafe"} else mapping

    return json.loads(json.dumps(value, default=encode), object_hook=decode)


def ansible_view(listing: dict) -> dict:
    """{host: (set of groups, merged vars)} from an ``ansible-inventory --list`` document."""
    groups = {name: body for name, body in listing.items() if name != "_meta"}

    def hosts_under(name, seen=()):
        body = groups.get(name, {})
        found = set(body.get("hosts", []))
        for child in body.get("children", []):
            if child not in seen:
                found |= hosts_under(child, (*seen, name))
        return found

    members = {name: hosts_under(name) for name in groups}
    hostvars = listing["_meta"]["hostvars"]
    every_host = set().union(*members.values(), hostvars)
    return {
        host: ({"all"} | {g for g, hosts in members.items() if host in hosts}, as_json(hostvars.get(host, {})))
        for host in every_host
    }


def our_view(inventory) -> dict:
    """The same view of what the loader resolved."""
    return {
        name: (set(host.groups), as_json({k: v for k, v in host.ansible_vars.items() if k not in ANSIBLE_INTERNAL_VARS}))
        for name, host in inventory.hosts.items()
    }


def check_case(case: str, listing: dict):
    """Our result for one case agrees with Ansible's listing, or is the case's documented refusal."""
    expected_error = refusal(case)
    if expected_error is not None:
        path = CORPUS / f"{case}.yaml"
        with pytest.raises(InventoryError) as caught:
            load_inventory(path).select("all")  # per-host refusals stop the tasks that target the host
        message = str(caught.value)
        assert expected_error in message and message.startswith(str(path)) and "\n" not in message, message
        return
    assert "ansible_error" not in listing, f"Ansible rejects {case}; mark it '# refused:'"
    ours, theirs = our_view(load_case(case)), ansible_view(listing)
    assert set(ours) == set(theirs)
    for host in theirs:
        assert ours[host][0] == theirs[host][0], f"groups of {host}"
        assert ours[host][1] == theirs[host][1], f"vars of {host}"


@pytest.mark.parametrize("case", CASES)
def test_case_agrees_with_recorded_ansible_inventory(case):
    check_case(case, json.loads((CORPUS / f"{case}.expected.json").read_text()))


@pytest.mark.skipif(shutil.which("ansible-inventory") is None, reason="ansible-inventory is not on PATH")
@pytest.mark.parametrize("case", [case for case in CASES if refusal(case) is None])
def test_case_agrees_with_live_ansible_inventory(case):
    spec = importlib.util.spec_from_file_location("record", CORPUS / "record.py")
    record = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(record)
    path = CORPUS / case if (CORPUS / case).is_dir() else CORPUS / f"{case}.yaml"
    check_case(case, record.ansible_list(path, "ansible-inventory"))


def test_every_case_is_recorded():
    assert CASES and all((CORPUS / f"{case}.expected.json").exists() for case in CASES)

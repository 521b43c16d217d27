"""Inventory: Ansible inventory sources, read the way ``ansible-inventory`` (ansible-core 2.19) reads them.

Sources are YAML or INI files or folders of them, several merged in order, each with its
``group_vars/`` and ``host_vars/`` (``sources``, ``ini_reader``, ``vars_files``). The YAML shape:

Hosts, groups (with ``all`` and ``ungrouped``) and each host's merged variables agree with
``ansible-inventory --list``; the README's Inventory section lists what is refused instead. Shape::

    all:                      # and/or other top-level groups beside it
      vars: {...}
      hosts: {...}
      children:
        <group>:
          vars: {...}
          hosts:
            <host pattern>: {...}     # web-[01:20].example.com, db:2222, [2001:db8::1]:22
          children: {<group defined here or elsewhere>: }

Variable precedence, lowest first: role defaults < ``all`` vars < parent groups < child groups
(same depth: by ``ansible_group_priority``, then by name) < ``group_vars/`` files (``all`` first, then
the groups in that order) < host vars < ``host_vars/`` files < ``--set`` values.

Each host keeps two views of its inventory variables: ``ansible_vars``, exactly what Ansible
merges, and ``inventory_vars``, the same plus our normalised connection settings (``connection``,
``address``, ``ssh_user``... see ``SETTINGS``) that the transports read.
Every problem is one ``InventoryError`` line naming the file; a problem of one host is kept on
that host (``Host.problem``) and stops only the tasks that target it (``Inventory.select``).

Modules: ``model`` (Host, Inventory, errors), ``yaml_reader``, ``patterns``, ``groups`` (reading) and ``tree``
(Ansible's group tree and precedence), ``connection`` (connection variables), ``sources``,
``ini_reader``, ``vars_files``, ``vault``, ``jinja`` (templated variables) with ``jinja_env`` (its filters), ``loader``.
"""

from .loader import load_inventory
from .model import Host, Inventory, InventoryError, is_secret_name, masked, register_secrets
from .patterns import parse_host_pattern

__all__ = ["Host", "Inventory", "InventoryError", "is_secret_name", "load_inventory", "masked", "parse_host_pattern",
           "register_secrets"]

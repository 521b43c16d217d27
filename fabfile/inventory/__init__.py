"""Inventory: an Ansible YAML inventory, read the way ``ansible-inventory`` (ansible-core 2.19) reads it.

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
(same depth: by ``ansible_group_priority``, then by name) < host vars < ``--set`` values.

Each host keeps two views of its inventory variables: ``ansible_vars``, exactly what Ansible
merges, and ``inventory_vars``, the same plus our normalised connection settings (``connection``,
``address``, ``ssh_user``... see ``SETTINGS``) that the transports read.
Every problem is one ``InventoryError`` line naming the file.

Modules: ``model`` (Host, Inventory, errors), ``yaml_reader``, ``patterns``, ``groups``
(Ansible's group tree and precedence), ``connection`` (connection variables), ``loader``.
"""

from .loader import load_inventory
from .model import Host, Inventory, InventoryError, is_secret_name, masked
from .patterns import parse_host_pattern

__all__ = ["Host", "Inventory", "InventoryError", "is_secret_name", "load_inventory", "masked", "parse_host_pattern"]

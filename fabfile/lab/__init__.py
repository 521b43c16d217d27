"""The local Incus lab the roles run against (``inv lab.up | lab.status | lab.down``).

``lab.up`` takes a bare Debian 12/13 machine (as root) to one running container
per inventory host that uses the incus connection: Incus installed from the apt
mirror already configured on the machine, its daemon started without systemd,
a ``dir`` storage pool, the lab bridge, a Debian base image built once with
debootstrap and cached under ``.lab/``, each container with its inventory
address, systemd running, and root ssh with a lab key and a strict
``known_hosts`` file. Every step checks before it acts, so a second run changes
nothing, and a run after any failure repairs what the last one left behind.

Modules: ``base`` (paths, errors, progress, commands), ``settings``,
``host_packages``, ``incus_setup`` (daemon, pool, bridge, profile), ``local_files``,
``image``, ``containers``, ``lifecycle`` (the entry points).
"""

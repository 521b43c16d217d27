"""inv site.setup: the whole stack in one call, like Ansible's site.yml.

Every host gets the common baseline plus the roles of its groups (HAProxy, and keepalived when
``lb_vip`` is set, on the balancers; each binary service on its pool; with a ``monitoring`` group, a
node exporter everywhere and Prometheus + Alertmanager on the monitor host, as ``monitor.setup``), all planned before any host is touched (bad input: exit 2,
nothing changed) and run as one play: every host in parallel (``--forks``), one batched probe
round trip per host, so a no-op re-run costs about one ``incus exec`` per host. Restarts of a
pool's instances stay within its capacity floor (``deploy_min_up``), as ``api.setup`` does.

On the balancers the baseline's package step also installs haproxy: one apt-get run instead of
two on a fresh host (the haproxy role's own package step then finds it installed). An inventory
that sets ``common_packages`` keeps its own list.
"""

from invoke import Collection

from ..services import BALANCER_GROUP, SERVICES
from . import support
from .monitor import MONITOR_GROUP
from .support import task

HELP = {**support.COMMON_HELP, "secrets": "secrets file for the services' env files (default: the inventory's secrets_file)",
        "lock_wait": "wait up to SECONDS for another run's deploy lock instead of exiting 3"}


@task(help=HELP, iterable=["set"])
@support.user_errors
def setup(c, inventory=None, limit=None, check=False, diff=False, report=None, set=None, secrets=None, forks=10,
          lock_wait=None):
    """Common baseline, HAProxy, backend-api and stream-server setups in one parallel play."""
    import dataclasses

    from ..roles import common, haproxy
    from ..roles.binary_service import role_for
    loaded, hosts = support.select(c, inventory, "all", limit, set)
    support.check_placement(loaded)
    topology = support.topology(loaded)
    guard = support.guard(loaded, "site.setup", lock_wait, topology)
    services = [config for config in SERVICES.values() if any(config.group in h.groups for h in hosts)]
    secret_values = support.secrets_for(hosts, secrets) if services else {}
    balancer_roles = [haproxy.ROLE]
    if topology.pair is not None:  # lb_vip set: the pair's keepalived, as haproxy.setup does
        from ..roles import keepalived

        secret_values = {**secret_values, **support.secrets_for(hosts, secrets)}
        balancer_roles.append(keepalived.role_for(secret_values))
    roles = {config.group: [role_for(config, secret_values)] for config in services}
    roles[BALANCER_GROUP] = balancer_roles
    # A monitoring group: node exporters everywhere and the monitor's services, as monitor.setup does.
    monitored = MONITOR_GROUP in loaded.groups and bool(loaded.group(MONITOR_GROUP))
    if monitored:
        from ..roles import monitoring

        roles[MONITOR_GROUP] = [monitoring.MONITOR_ROLE]

    baseline_with_haproxy = dataclasses.replace(common.ROLE, defaults={
        **common.ROLE.defaults, "common_packages": [*common.ROLE.defaults["common_packages"], *haproxy.PACKAGES]})

    def roles_for(host):
        baseline = baseline_with_haproxy if BALANCER_GROUP in host.groups else common.ROLE
        exporter = [monitoring.NODE_EXPORTER_ROLE] if monitored else []
        return [baseline, *exporter,
                *(role for group, group_roles in roles.items() if group in host.groups for role in group_roles)]

    floors = [(config.group, support.floor_of(loaded, config)) for config in services]
    support.play("site.setup", loaded, hosts, None, check=check, diff=diff, report=report,
                 extra_secrets=secret_values.values(), forks=forks, roles_for=roles_for, floors=floors,
                 guard=guard)


collection = Collection("site", setup)

"""common: the baseline every host gets before its own role.

Defaults:
    common_packages: ca-certificates, curl, socat (socat carries the HAProxy runtime API),
        nftables (test.failover --stop-method drop silences a backend with it)
    common_apt_lists_max_age: 86400 (seconds; older package lists are refreshed)
    common_timezone: Etc/UTC
Steps: refresh stale apt lists, install the base packages, set the timezone.
Handlers: none.
"""

from ..operations import apt_lists_fresh, apt_packages, timezone
from .base import Role

DEFAULTS = {
    "common_packages": ["ca-certificates", "curl", "socat", "nftables"],
    "common_apt_lists_max_age": 86400,
    "common_timezone": "Etc/UTC",
}


def steps(context):
    v = context.vars
    return [
        apt_lists_fresh(int(v["common_apt_lists_max_age"])),
        apt_packages(v["common_packages"], lists_max_age=int(v["common_apt_lists_max_age"])),
        timezone(v["common_timezone"]),
    ]


ROLE = Role(name="common", defaults=DEFAULTS, steps=steps)

"""binary_service: a system user, its directories, env file and a hardened systemd unit.

One mechanism, two configurations (``services.BACKEND_API``, the Go API, and
``services.STREAM_SERVER``, the Rust streamer). Each configuration names its variable
prefix, inventory group, HAProxy pool and env template; everything else is shared.

Defaults (shown for backend_api_; stream_server_ has its own values):
    <prefix>_user, _uid          system user (and its group) owning the runtime dirs
    <prefix>_install_dir         binary + working dir, root-owned so the service cannot rewrite its own binary
    <prefix>_binary_name         binary basename
    <prefix>_listen_port         matches the HAProxy upstream
    <prefix>_env_file            EnvironmentFile=, mode 0640 root:<user>, rendered with secrets
    <prefix>_log_dir             the only other writable path
    <prefix>_health_path         what the deploy gates on
Steps: group, user, directories, env file, unit file (daemon-reload on change), unit enabled.
Handlers: restart the unit when the env file or unit changed (only if it is running), then
wait (bounded) for its health path to answer 200: the restart holds its pool's slot until the
instance serves again, so with the capacity floor's slots a pool never restarts all at once.
"""

from __future__ import annotations

from ..operations import directory, file, group, service, system_user, systemd_unit
from ..secrets_file import with_vault
from .. import values
from ..services import ServiceConfig
from ..shell import q
from ..templating import render
from .base import Role

COMMON_DEFAULTS = {
    "veza_environment": "lab",
    "veza_config_dir": "/etc/veza",
}


def role_for(config: ServiceConfig, secrets: dict) -> Role:
    """The setup role of one configuration, with the secrets its env file needs."""

    def steps(context):
        v = {**context.vars, "secrets": with_vault(secrets, context.vars)}  # vault values beat the secrets file
        settings = config.settings(v)
        if f"{config.prefix}_db_host" in v:  # rendered raw into DATABASE_URL: a host[:port], nothing else
            values.hostname(f"{config.prefix}_db_host", v[f"{config.prefix}_db_host"])
        user = settings.user
        restart = [f"restart {settings.unit}"]
        return [
            group(user, settings.uid),
            system_user(user, user, settings.uid),
            directory(settings.install_dir, "root", user, "0755"),
            directory(values.absolute_path("veza_config_dir", v["veza_config_dir"]), "root", "root", "0755"),
            *[directory(path, user, user, "0750") for path in settings.writable_dirs],
            # Holds secrets: --diff names the keys that change, never a value.
            file(settings.env_file, render(config.env_template, v), owner="root", group=user, mode="0640",
                 notify=restart, diff_mode="keys"),
            systemd_unit(f"{settings.unit}.service", render("binary_service/unit.service.j2", {"service": settings}),
                         notify=restart),
            service(settings.unit, enabled=True, running=None),
        ]

    def handlers(variables):
        settings = config.settings(variables)
        return {f"restart {config.unit}": restart_until_healthy(settings)}

    return Role(name=config.prefix, defaults={**COMMON_DEFAULTS, **config.defaults}, steps=steps, handlers=handlers)


HEALTH_WAIT_TRIES = 100  # x 0.1 s: a restarted instance has 10 s to answer its health path


def restart_until_healthy(settings) -> str:
    """``try-restart`` (a stopped unit stays stopped), then, if it runs, its health answered 200 (bounded)."""
    unit = q(settings.unit)
    url = q(f"http://127.0.0.1:{settings.listen_port}{settings.health_path}")
    return (f"systemctl try-restart {unit} && if systemctl is-active -q {unit}; then "
            f"for i in $(seq {HEALTH_WAIT_TRIES}); do curl -fs -m 1 -o /dev/null {url} && exit 0; sleep 0.1; done; "
            f"echo {q(f'{settings.unit}: health did not answer 200 within 10 s of the restart')} >&2; exit 1; fi")

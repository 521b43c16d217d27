"""binary_service: a system user, its directories, env file and a hardened systemd unit.

One mechanism, two configurations: ``BACKEND_API`` (the Go API) and
``STREAM_SERVER`` (the Rust streamer). Each configuration names its variable
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
Handlers: restart the unit when the env file or unit changed (only if it is running; the
play visits one host at a time so a pool never restarts all at once).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..operations import directory, file, group, service, system_user, systemd_unit
from ..runner import Role
from ..templating import render
from ..transports import q

COMMON_DEFAULTS = {
    "veza_environment": "lab",
    "veza_config_dir": "/etc/veza",
}


@dataclass(frozen=True)
class ServiceConfig:
    """What distinguishes one binary service from another."""

    prefix: str  # variable prefix, e.g. backend_api
    group: str  # inventory group of its instances
    pool: str  # HAProxy backend that serves it
    unit: str  # systemd unit name without .service
    description: str
    env_template: str
    defaults: dict = field(default_factory=dict)

    def settings(self, variables: dict) -> dict:
        """The generic view of this service's variables, as the unit template and the deploy use it."""
        p = self.prefix
        install_dir = variables[f"{p}_install_dir"]
        binary_path = f"{install_dir}/{variables[f'{p}_binary_name']}"
        writable = [variables[f"{p}_log_dir"]] + list(variables.get(f"{p}_writable_dirs", []))
        return {
            "role": p,
            "unit": self.unit,
            "description": self.description,
            "user": variables[f"{p}_user"],
            "uid": variables.get(f"{p}_uid"),
            "install_dir": install_dir,
            "binary_name": variables[f"{p}_binary_name"],
            "binary_path": binary_path,
            "listen_port": int(variables[f"{p}_listen_port"]),
            "env_file": variables[f"{p}_env_file"],
            "log_dir": variables[f"{p}_log_dir"],
            "writable_dirs": writable,
            "health_path": variables[f"{p}_health_path"],
            "pool": self.pool,
        }


BACKEND_API = ServiceConfig(
    prefix="backend_api",
    group="backend_api_instances",
    pool="api_pool",
    unit="veza-backend-api",
    description="Veza backend API (Go)",
    env_template="backend_api/backend-api.env.j2",
    defaults={
        "backend_api_user": "veza-api",
        "backend_api_uid": 1001,
        "backend_api_install_dir": "/opt/veza/backend-api",
        "backend_api_binary_name": "veza-api",
        "backend_api_listen_port": 8080,
        "backend_api_env_file": "/etc/veza/backend-api.env",
        "backend_api_log_dir": "/var/log/veza",
        "backend_api_health_path": "/api/v1/health",
        "backend_api_db_host": "127.0.0.1:5432",
        "backend_api_db_name": "veza",
        "backend_api_db_user": "veza",
    },
)

STREAM_SERVER = ServiceConfig(
    prefix="stream_server",
    group="stream_server_instances",
    pool="stream_pool",
    unit="veza-stream-server",
    description="Veza stream server (Rust, HLS)",
    env_template="stream_server/stream-server.env.j2",
    defaults={
        "stream_server_user": "veza-stream",
        "stream_server_uid": 1002,
        "stream_server_install_dir": "/opt/veza/stream-server",
        "stream_server_binary_name": "stream-server",
        "stream_server_listen_port": 8082,
        "stream_server_env_file": "/etc/veza/stream-server.env",
        "stream_server_log_dir": "/var/log/veza",
        "stream_server_cache_dir": "/var/cache/veza-stream",
        "stream_server_writable_dirs": ["/var/cache/veza-stream"],
        "stream_server_health_path": "/api/v1/health",
    },
)

CONFIGS = {"api": BACKEND_API, "stream": STREAM_SERVER}


def role_for(config: ServiceConfig, secrets: dict) -> Role:
    """The setup role of one configuration, with the secrets its env file needs."""

    def steps(context):
        v = {**context.vars, "secrets": secrets}
        svc = config.settings(v)
        user = svc["user"]
        restart = [f"restart {svc['unit']}"]
        return [
            group(user, svc["uid"]),
            system_user(user, user, svc["uid"]),
            directory(svc["install_dir"], "root", user, "0755"),
            directory(v["veza_config_dir"], "root", "root", "0755"),
            *[directory(path, user, user, "0750") for path in svc["writable_dirs"]],
            file(svc["env_file"], render(config.env_template, v), owner="root", group=user, mode="0640",
                 notify=restart),
            systemd_unit(f"{svc['unit']}.service", render("binary_service/unit.service.j2", {"svc": svc}),
                         notify=restart),
            service(svc["unit"], enabled=True, running=None),
        ]

    def handlers(variables):
        unit = config.unit
        return {f"restart {unit}": f"systemctl try-restart {q(unit)}"}

    return Role(name=config.prefix, defaults={**COMMON_DEFAULTS, **config.defaults}, steps=steps, handlers=handlers)

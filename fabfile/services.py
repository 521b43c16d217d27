"""The services this project runs, each fact written once.

A binary service (the Go API, the Rust streamer) is one ``ServiceConfig``: its
inventory group, HAProxy pool, systemd unit, variable prefix and defaults
(user, paths, listen port, health path). The binary_service role, the deploy,
the HAProxy template's upstreams and the failover test all read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import values

# The inventory group of the load balancers (the runtime API lives on each of them).
BALANCER_GROUP = "haproxy"

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

    @property
    def default_port(self) -> int:
        return int(self.defaults[f"{self.prefix}_listen_port"])

    @property
    def default_health_path(self) -> str:
        return self.defaults[f"{self.prefix}_health_path"]

    def settings(self, variables: dict) -> "ServiceSettings":
        """This service's variables for one instance, each checked against the grammar of its slot."""
        p = self.prefix
        install_dir = values.absolute_path(f"{p}_install_dir", variables[f"{p}_install_dir"])
        binary_name = values.file_name(f"{p}_binary_name", variables[f"{p}_binary_name"])
        writable = [variables[f"{p}_log_dir"], *variables.get(f"{p}_writable_dirs", [])]
        return ServiceSettings(
            role=p,
            unit=self.unit,
            description=values.text("description", self.description),
            user=values.user_name(f"{p}_user", variables[f"{p}_user"]),
            uid=None if variables.get(f"{p}_uid") is None else values.integer(f"{p}_uid", variables[f"{p}_uid"], 1, 65533),
            install_dir=install_dir,
            binary_name=binary_name,
            binary_path=f"{install_dir}/{binary_name}",
            listen_port=values.port(f"{p}_listen_port", variables[f"{p}_listen_port"]),
            env_file=values.absolute_path(f"{p}_env_file", variables[f"{p}_env_file"]),
            log_dir=values.absolute_path(f"{p}_log_dir", variables[f"{p}_log_dir"]),
            writable_dirs=tuple(values.absolute_path(f"{p}_writable_dirs", path) for path in writable),
            health_path=values.url_path(f"{p}_health_path", variables[f"{p}_health_path"]),
            pool=self.pool,
        )


@dataclass(frozen=True)
class ServiceSettings:
    """One instance's view of its service: what the unit template, the role and the deploy use."""

    role: str
    unit: str
    description: str
    user: str
    uid: int | None
    install_dir: str
    binary_name: str
    binary_path: str
    listen_port: int
    env_file: str
    log_dir: str
    writable_dirs: tuple
    health_path: str
    pool: str


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

SERVICES = {"api": BACKEND_API, "stream": STREAM_SERVER}

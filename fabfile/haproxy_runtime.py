"""HAProxy runtime API client: read server states, drain/maint/ready a server.

The admin-level runtime API is a unix socket only root can open
(``haproxy_admin_socket``, default ``/run/haproxy/admin.sock``); every command
runs *on the balancer* through its transport: ``echo CMD | socat -t 2 stdio
UNIX-CONNECT:PATH`` (socat comes with the common baseline). The TCP socket the
seed had (``127.0.0.1:9100``) stays for the exporter sidecar at ``level user``:
``show stat`` works there, ``set server`` is refused.

``runtime_command`` builds the command line (pure, tested by value); ``RuntimeAPI``
sends it through whatever transport it is given; ``haproxy_state`` reads what comes back.
"""

from __future__ import annotations

import re

from .haproxy_state import PoolView, ServerStat, StateParseError, parse_show_stat
from .shell import Command, q
from .values import CONTROL_CHARACTER, absolute_path

DEFAULT_ADMIN_SOCKET = "/run/haproxy/admin.sock"
# Installed by the haproxy role (templates/haproxy/haproxy-server-state.sh.j2): ``save`` writes the running
# states to the server-state file. Run after every state change the tool makes, in the same round trip,
# so a crash right after it cannot bring back the state before it.
SERVER_STATE_SCRIPT = "/usr/local/lib/veza-ops/haproxy-server-state"
SAVE_STATES = f"if [ -x {SERVER_STATE_SCRIPT} ]; then {SERVER_STATE_SCRIPT} save; fi"
SERVER_STATES = ("ready", "drain", "maint")
COMMAND_TIMEOUT = 15  # seconds for one runtime API round trip, transport included


class RuntimeAPIError(Exception):
    """The runtime API could not be reached, or refused or failed a command."""


def runtime_command(command, socket_path: str = DEFAULT_ADMIN_SOCKET, *, save_states: bool = False) -> Command:
    """The shell line that sends one runtime API ``command`` (or a list of them, run in order in one
    connection: HAProxy's ``;`` separator) to the admin socket; every part quoted. ``save_states``:
    then write the server-state file (a command that changes states)."""
    commands = [command] if isinstance(command, str) else list(command)
    for one in commands:
        if ";" in one or CONTROL_CHARACTER.search(one) or "\x85" in one or "\u2028" in one or "\u2029" in one:
            raise ValueError(f"runtime API command {one!r} must be one command on one line")
    line = "; ".join(commands)
    # socat reads its own address syntax (",", "!!", "SYSTEM:"...): only a plain absolute path goes there.
    socket_path = absolute_path("haproxy_admin_socket", socket_path)
    send = f"echo {q(line)} | socat -t 2 stdio {q('UNIX-CONNECT:' + socket_path)}"
    return Command(f"{send} && {SAVE_STATES}" if save_states else send, timeout=COMMAND_TIMEOUT)


def _reason(result) -> str:
    """socat's reason without its timestamp and call: ``... E connect(, AF=1 "...", 25): Connection refused``
    is "Connection refused"."""
    tail = result.tail(1)
    if " socat[" in tail and "): " in tail:
        return tail.rsplit("): ", 1)[1]
    return tail or f"exit {result.exited}"


class RuntimeAPI:
    """The admin runtime API of one balancer, reached through that balancer's transport."""

    def __init__(self, transport, socket_path: str = DEFAULT_ADMIN_SOCKET):
        self.transport = transport
        self.address = socket_path
        self.name = transport.name

    def send(self, command, *, save_states: bool = False) -> str:
        """Send one runtime API command (or a list, in one round trip) and return its reply text;
        ``save_states``: a state change, written to the server-state file in the same round trip."""
        result = self.transport.run(runtime_command(command, self.address, save_states=save_states), warn=True)
        where = f"{self.transport.name}: HAProxy runtime API at {self.address}"
        if result.exited == 127:
            raise RuntimeAPIError(f"{where}: socat is not installed on the host (the common role installs it)")
        if result.exited == 124:
            raise RuntimeAPIError(f"{where}: no reply within {COMMAND_TIMEOUT}s to {command!r}")
        if result.exited != 0:
            raise RuntimeAPIError(f"{where} does not answer ({_reason(result)}); is haproxy running with that stats socket?")
        return result.stdout

    def show_stat(self, *, include_aggregates: bool = False) -> list:
        """Every server's state (and FRONTEND/BACKEND rows if asked)."""
        reply = self.send("show stat")
        if not reply.strip():
            # Seen once in many thousand calls on the lab (a reply lost when socat half-closes early);
            # a read is safe to repeat, so one more try before calling the balancer broken.
            reply = self.send("show stat")
        if not reply.strip():
            raise RuntimeAPIError(f"{self.transport.name}: empty reply to 'show stat' from {self.address} (twice)")
        try:
            return parse_show_stat(reply, include_aggregates=include_aggregates)
        except StateParseError as exc:
            raise RuntimeAPIError(f"{self.transport.name}: {exc}") from None

    def server(self, pool: str, name: str) -> ServerStat:
        """The state of ``pool/name``; a clear error naming what exists if it does not."""
        stats = self.show_stat()
        view = PoolView(pool, stats)
        stat = view.row(name)
        if stat is not None:
            return stat
        if view:
            known = f"servers of {pool}: {', '.join(view.names)}"
        else:
            known = f"no pool {pool!r}; pools: {', '.join(sorted({stat.pool for stat in stats})) or 'none'}"
        raise RuntimeAPIError(f"{self.transport.name}: no server {pool}/{name} in HAProxy ({known})")

    def set_state(self, pool: str, server: str, state: str, health: str | None = None) -> None:
        """Put ``pool/server`` in ``ready``, ``drain`` or ``maint`` state. With ``health`` (``up``), also
        force its check result in the same round trip: used once our own gates proved it healthy, so
        HAProxy does not wait ``rise`` checks before sending it traffic (its checks keep running)."""
        if state not in SERVER_STATES:
            raise RuntimeAPIError(f"server state {state!r} is not one of {', '.join(SERVER_STATES)}")
        if health not in (None, "up", "stopping", "down"):
            raise RuntimeAPIError(f"server health {health!r} is not one of up, stopping, down")
        commands = [f"set server {pool}/{server} state {state}"]
        if health:
            commands.append(f"set server {pool}/{server} health {health}")
        reply = self.send(commands, save_states=True).strip()
        # Success is an empty reply; any text is HAProxy explaining a refusal.
        if reply:
            raise RuntimeAPIError(f"{self.transport.name}: '{'; '.join(commands)}' refused: {reply}")

    def weights(self, pool: str, servers) -> dict:
        """``{server: (current, initial)}`` runtime weights of ``servers`` of ``pool``, one round trip."""
        servers = list(servers)
        replies = self.send([f"get weight {pool}/{server}" for server in servers]).split("\n\n")
        weights = {}
        for server, reply in zip(servers, replies + [""] * len(servers)):
            match = re.fullmatch(r"(\d+) \(initial (\d+)\)", reply.strip())
            if not match:
                raise RuntimeAPIError(f"{self.transport.name}: 'get weight {pool}/{server}' answered {reply.strip()!r}")
            weights[server] = (int(match.group(1)), int(match.group(2)))
        return weights

    def set_weights(self, pool: str, weights: dict) -> None:
        """``set weight pool/server W`` for every ``{server: W}`` (0..256), one round trip; HAProxy's refusal
        (a static balance algorithm, say) is raised with its own words."""
        if not weights:
            return
        for server, weight in weights.items():
            if not isinstance(weight, int) or not 0 <= weight <= 256:
                raise RuntimeAPIError(f"weight {weight!r} for {pool}/{server} is not a whole number from 0 to 256")
        commands = [f"set weight {pool}/{server} {weight}" for server, weight in weights.items()]
        reply = self.send(commands).strip()
        if reply:
            raise RuntimeAPIError(f"{self.transport.name}: 'set weight' refused for {pool}: {' '.join(reply.split())}")


__all__ = ["RuntimeAPI", "RuntimeAPIError", "ServerStat", "parse_show_stat", "runtime_command"]

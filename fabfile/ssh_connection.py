"""Opening a Fabric connection with an explicit host-key policy (imported only for ssh hosts).

Inventory vars: ``address`` (else the inventory name, like Ansible), ``ssh_user``
(root), ``ssh_port`` (22), ``ssh_key_file``, ``ssh_known_hosts`` and
``ssh_host_key_policy``:

- ``strict`` (default): the key must already be in ``ssh_known_hosts`` or the
  user's known_hosts; an unknown key is refused.
- ``accept-new``: an unknown key is trusted once and recorded in
  ``ssh_known_hosts`` (default ``~/.ssh/known_hosts``, created 0600), like
  OpenSSH's ``StrictHostKeyChecking=accept-new``; later runs check it.

A changed key and an authentication failure are refused at once (retrying
cannot fix either); only a connection that could not be opened is retried.
"""

from __future__ import annotations

import os
import time

POLICIES = ("strict", "accept-new")


def known_hosts_path(variables: dict) -> str:
    return os.path.expanduser(variables.get("ssh_known_hosts") or "~/.ssh/known_hosts")


def _ensure_private_file(path: str) -> None:
    """Create ``path`` empty with mode 0600 (its directory 0700) if it does not exist."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def _load_known_hosts(client, variables: dict, policy: str, fail) -> None:
    import paramiko

    path = known_hosts_path(variables)
    if policy == "accept-new":
        _ensure_private_file(path)
    from paramiko.hostkeys import InvalidHostKey

    for which, load in ((os.path.expanduser("~/.ssh/known_hosts"), client.load_system_host_keys),
                        (path, client.load_host_keys)):
        if which == path and not os.path.exists(path):
            continue
        if load is client.load_system_host_keys and policy != "strict":
            continue
        try:
            # load_host_keys also names the file paramiko saves newly accepted keys to.
            load(path) if which == path else load()
        except InvalidHostKey as exc:
            # A line whose key is not valid base64 (paramiko raises this outside SSHException).
            raise fail(f"known_hosts file {which} is malformed: bad key on line {str(exc.line).strip()[:60]!r}; "
                       "fix or remove that line") from None
        except (paramiko.SSHException, ValueError, UnicodeDecodeError) as exc:
            raise fail(f"known_hosts file {which} is malformed ({str(exc)[:80]}); fix or remove the bad line") from None
        except OSError as exc:
            raise fail(f"cannot read known_hosts file {which}: {exc.strerror}") from None


def open_connection(host, fail, connect_timeout: float, attempts: int):
    """A connected ``fabric.Connection`` to ``host``; every failure raised as ``fail(one line)``."""
    import fabric
    import paramiko

    v = host.vars
    policy = v.get("ssh_host_key_policy", "strict")
    if policy not in POLICIES:
        raise fail(f"{host.name}: ssh_host_key_policy {policy!r} is unknown; use strict or accept-new")
    address = host.ssh_address
    kwargs = {"banner_timeout": connect_timeout, "auth_timeout": connect_timeout}
    if v.get("ssh_key_file"):
        kwargs.update(pkey=load_key(host.name, os.path.expanduser(v["ssh_key_file"]), fail), look_for_keys=False,
                      allow_agent=False)
    gateway = None
    if v.get("ssh_proxy_jump"):
        gateway = fabric.Connection(v["ssh_proxy_jump"], connect_timeout=connect_timeout, connect_kwargs=dict(kwargs))
        _trust(gateway.client, v, policy, lambda text: fail(f"{host.name} (jump host): {text}"))
    last_error = None
    for attempt in range(attempts):
        connection = fabric.Connection(host=address, user=v.get("ssh_user", "root"), port=int(v.get("ssh_port", 22)),
                                       connect_timeout=connect_timeout, connect_kwargs=kwargs, gateway=gateway)
        _trust(connection.client, v, policy, lambda text: fail(f"{host.name}: {text}"))
        try:
            connection.open()
            return connection
        except paramiko.BadHostKeyException:
            raise fail(f"{host.name}: the host key of {address} has CHANGED since it was recorded in "
                       f"{known_hosts_path(v)}; refusing to connect (verify the host, then remove the old key)") from None
        except paramiko.AuthenticationException as exc:
            raise fail(f"{host.name}: ssh authentication as {v.get('ssh_user', 'root')}@{address} failed ({exc}); "
                       "check ssh_user and ssh_key_file") from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise fail(f"{host.name}: host key of {address} is not known; add it to {known_hosts_path(v)} "
                           "or set ssh_host_key_policy: accept-new") from None
            last_error = exc
        except OSError as exc:
            last_error = exc
        time.sleep(0.5 * 2**attempt)
    raise fail(f"{host.name}: ssh to {address} failed after {attempts} attempts: {last_error}")



def load_key(name: str, path: str, fail):
    """The private key at ``path``, whatever its type and format (OpenSSH, PEM RSA/ECDSA, Ed25519).

    Loaded here, once, rather than handed to paramiko as a file name: paramiko then tries each key
    class in turn and, when the server refuses the key, reports the last class's parse error ("encountered
    RSA key, expected OPENSSH key") instead of the authentication failure, which we would retry.
    """
    import paramiko

    try:
        return paramiko.PKey.from_path(path)
    except (paramiko.PasswordRequiredException, TypeError):  # cryptography says TypeError for a PEM one
        raise fail(f"{name}: ssh key file {path} is encrypted; use an unencrypted deploy key or an agent") from None
    except (paramiko.SSHException, ValueError, UnicodeDecodeError) as exc:
        raise fail(f"{name}: ssh key file {path} is not a private key paramiko reads ({str(exc)[:80]})") from None
    except OSError as exc:
        raise fail(f"{name}: cannot read ssh key file {path}: {exc.strerror}") from None


def _trust(client, variables: dict, policy: str, fail) -> None:
    """Known hosts loaded and the missing-key policy set on a paramiko client (target or jump host)."""
    import paramiko

    _load_known_hosts(client, variables, policy, fail)
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy() if policy == "accept-new" else paramiko.RejectPolicy())

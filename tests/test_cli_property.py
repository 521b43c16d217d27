"""A property test over the whole CLI: whatever tasks x --set keys/values x flag values hypothesis draws,
every run ends with exit 0, 1 or 2 (3 when a lock is held) and no traceback, and an exit 2 ran nothing on
any host (a stub transport records every command and upload).

The CLI runs in-process (invoke's ``Program`` over ``fabfile.ns``), so a few hundred examples fit in
seconds. The stub is an unreachable host: tasks that get past their checks fail at their first contact
(exit 1) without waiting on anything.
"""

from __future__ import annotations

import contextlib
import io
import string
import sys

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from invoke import Program

from fabfile import masking, ns, transports
from fabfile.schema import schema

# Tasks that reach hosts only through the transports (tasks that drive load, the lab or Incus itself are
# covered by their own tests).
TASKS = ["haproxy.status", "haproxy.setup", "api.status", "stream.status", "api.setup", "common.setup",
         "keepalived.setup", "lb.status", "lock.status", "audit", "inventory.show", "api.rollback",
         "stream.deploy", "site.setup", "monitor.rules"]
FLAGS = {  # flag -> values worth drawing besides garbage
    "--forks": ["1", "10", "0", "x", "٤", "1e3", "99999999999999999999"],
    "--last": ["5", "-1", "x", "１２"],
    "--limit": ["haproxy", "backend-api-1", "nope", "-x", "a\x1b[31m"],
    "--report": ["{tmp}/r.json", "{tmp}", "{tmp}/missing/r.json"],
    "--lock-wait": ["5", "x", "nan", "-3"],
    "--secrets": ["{tmp}/secrets.yaml", "{tmp}", "{tmp}/binary", "{tmp}/missing.yaml"],
    "--out": ["{tmp}/rules", "{tmp}/binary"],
}
KNOWN = sorted(schema())
NASTY = ["", " ", "'", '"', "\\", "\n", "\r", "\x00", "\x1b[2J", "\u202e", "!!", "SYSTEM:id", "EXEC:id", ",fork",
         "$(id)", "`id`", ";", "|", "&", "}", "{", "%", "٤٠٩٦", "１２", "¹", "9" * 40, "-1", "1e400", "nan", "true",
         "[1, 2]", "{a: 1}", "~", "/run/haproxy/admin.sock", "/lb-health"]


def _key():
    return st.one_of(st.sampled_from(KNOWN), st.sampled_from(KNOWN).map(lambda k: k + "s"),
                     st.text(string.ascii_lowercase + "_", min_size=1, max_size=12))


def _value():
    scalar = st.one_of(st.sampled_from(NASTY), st.text(max_size=12), st.integers(-10 ** 30, 10 ** 30).map(str),
                       st.lists(st.sampled_from(NASTY), max_size=3).map("".join))
    nested = st.one_of(st.lists(scalar, max_size=3).map(lambda items: yaml.safe_dump(items, default_flow_style=True)),
                       st.dictionaries(st.sampled_from(["name", "address", "port", "x"]), scalar, max_size=3)
                       .map(lambda items: yaml.safe_dump(items, default_flow_style=True)))
    return st.one_of(scalar, nested).map(lambda text: text.strip("\n") if text.endswith("\n") else text)


class StubTransport(transports.Transport):
    """Records every command and upload a task attempts, and answers as an unreachable host: a task that
    gets past its checks fails on its first contact (exit 1), so an exit 2 can only come before any."""

    calls: list = []

    def _run(self, command, *, timeout, stdin):
        StubTransport.calls.append((self.name, "run", command))
        raise transports.TransportError(f"{self.name}: stub: unreachable")

    def _put(self, local_path, remote, mode):
        StubTransport.calls.append((self.name, "put", remote))
        raise transports.TransportError(f"{self.name}: stub: unreachable")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "secrets.yaml").write_text("database_password: dbpass-1\njwt_secret: jwt-secret-1\nvrrp_password: vrrp1\n"
                                      "stream_signing_key: sk-1\n")
    (tmp / "binary").write_bytes(b"\x00\xff\x00")
    pair = {"haproxy": {"address": "10.250.0.10"}, "haproxy-2": {"address": "10.250.0.11"}}
    inventory = {"all": {"vars": {"connection": "incus", "secrets_file": str(tmp / "secrets.yaml"),
                                  "lb_vip": "10.250.0.5", "lab_subnet": "10.250.0.0/24"},
                         "children": {"haproxy": {"hosts": pair},
                                      "backend_api_instances": {"hosts": {"backend-api-1": {"address": "10.250.0.21"},
                                                                          "backend-api-2": {"address": "10.250.0.22"}}},
                                      "stream_server_instances": {"hosts": {"stream-server-1": {"address": "10.250.0.31"}}}}}}
    (tmp / "hosts.yaml").write_text(yaml.safe_dump(inventory))
    return tmp


def run_cli(argv: list) -> tuple:
    """``inv ARGV`` in-process: (exit code, stdout, stderr, what reached a host)."""
    StubTransport.calls = []
    out, err = io.StringIO(), io.StringIO()
    program = Program(namespace=ns, name="inv", binary="inv")
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            program.run(["inv", *argv], exit=True)
        except SystemExit as exited:
            code = exited.code if isinstance(exited.code, int) else (0 if exited.code is None else 1)
    return code, out.getvalue(), err.getvalue(), list(StubTransport.calls)


@pytest.fixture(autouse=True)
def stub_transports(monkeypatch, world):
    monkeypatch.chdir(world)  # a relative --out/--report drawn from the garbage lands in the test's folder
    for kind in list(transports.TRANSPORT_CLASSES):
        monkeypatch.setitem(transports.TRANSPORT_CLASSES, kind, StubTransport)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
@given(task=st.sampled_from(TASKS), sets=st.lists(st.tuples(_key(), _value()), max_size=3),
       flags=st.lists(st.sampled_from(sorted(FLAGS)).flatmap(
           lambda flag: st.tuples(st.just(flag), st.one_of(st.sampled_from(FLAGS[flag]), st.sampled_from(NASTY)))),
           max_size=2, unique_by=lambda item: item[0]))
def test_every_run_ends_in_a_known_exit_without_traceback_and_exit_2_touches_nothing(world, task, sets, flags):
    argv = [task, "--inventory", str(world / "hosts.yaml")]
    for key, value in sets:
        argv += ["--set", f"{key}={value}"]
    for flag, value in flags:
        argv += [flag, value.replace("{tmp}", str(world))]
    code, out, err, reached = run_cli(argv)
    event(f"exit {code}")
    assert "Traceback" not in out + err, (argv, err)
    assert code in (0, 1, 2, 3), (argv, code, err)
    if code == 2:
        assert reached == [], (argv, err, reached[:3])
        # one line on stderr; what it quotes is masked and escaped
        assert "\x1b" not in err and "dbpass-1" not in err, (argv, err)


def test_the_property_sees_a_run_that_reaches_hosts(world):
    """The stub does record: a clean status run tries the balancers (so 'nothing ran' above means something)."""
    code, _, err, reached = run_cli(["haproxy.status", "--inventory", str(world / "hosts.yaml")])
    assert code == 1 and reached and {name for name, _, _ in reached} <= {"haproxy", "haproxy-2"}, (code, err)


def test_a_bad_set_value_is_refused_before_any_host(world):
    code, _, err, reached = run_cli(["haproxy.status", "--inventory", str(world / "hosts.yaml"),
                                     "--set", "haproxy_admin_socket=/tmp/x,fork!!SYSTEM:touch /tmp/owned"])
    assert code == 2 and reached == [] and "haproxy_admin_socket" in err


def teardown_module():
    masking.forget_registered()

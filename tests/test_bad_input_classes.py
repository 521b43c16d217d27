"""Issue 22 (bad input, second pass), through the CLI and the places that print what came from outside:
inventory.show, error lines, the lock holder, the audit table, the secrets file, flags and output paths.

The unit rules themselves (masking.py, flags.py) are tested in test_masking_flags.py.
"""

from __future__ import annotations

import json

import pytest
from conftest import assert_one_error_line
from test_security_unit import inv, write_inventory

from fabfile import masking
from fabfile.deploy import audit
from fabfile.deploy.lock import LockState
from fabfile.secrets_file import load_secrets
from fabfile.templating import TemplateError


def test_inventory_show_masks_nested_any_case_and_escapes_names(tmp_path):
    path = write_inventory(tmp_path, all_vars={
        "password": "pw-plain-1", "Api_Token": "tok-AAA-2", "db": {"PassWord": "nested-pw-3", "user": "veza"},
        "services": [{"name": "x", "Credential": "cred-list-4"}]})
    done = inv("inventory.show", "--inventory", str(path), "--host", "haproxy")
    assert done.returncode == 0, done.stderr
    for secret in ("pw-plain-1", "tok-AAA-2", "nested-pw-3", "cred-list-4"):
        assert secret not in done.stdout
    assert '"user": "veza"' in done.stdout


def test_error_line_quoting_a_set_item_masks_its_secret(tmp_path):
    done = inv("haproxy.setup", "--inventory", str(write_inventory(tmp_path)), "--check",
               "--set", "Admin_Passwd:Zq9-leak")
    line = assert_one_error_line(done, 2, "Admin_Passwd")
    assert "Zq9-leak" not in line


def test_audit_lines_hold_no_registered_or_secret_named_value():
    masking.register_secret("vault-plain-Q7")
    entry = audit.record("deploy", who="me", run="r", task="t", detail="pw vault-plain-Q7", api_token="tok-9")
    assert "vault-plain-Q7" not in json.dumps(entry) and "tok-9" not in json.dumps(entry)


def test_secrets_file_values_registered_folder_and_binary_one_line(tmp_path):
    good = tmp_path / "s.yaml"
    good.write_text("anything: from-secrets-file-5\n")
    load_secrets(str(good))
    assert masking.mask_text("x from-secrets-file-5") == "x ********"
    with pytest.raises(TemplateError, match="is a folder"):
        load_secrets(str(tmp_path))
    binary = tmp_path / "b.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(TemplateError, match="binary|YAML"):
        load_secrets(str(binary))


def test_lock_holder_written_elsewhere_is_escaped_and_masked():
    holder = LockState("held", {"who": "ev\x1b[31mil@ws\x1b]0;pwned\x07", "pid": 1, "task": "api.deploy",
                                "message": "db_password=hunter22", "started": "now"}).holder()
    assert "\x1b" not in holder and "\\x1b" in holder and "hunter22" not in holder


def test_malformed_audit_lines_render_as_escaped_text():
    raw = "\n".join([json.dumps({"event": ["x"], "time": 5, "who": {"a": 1}, "seconds": True, "from": [1]}),
                     "[1, 2]", "not json", json.dumps({"event": "canary-step", "outcome": 3, "detail": None}),
                     json.dumps({"who": "\x1b[31mred", "event": "lock", "seconds": "x"})])
    rows = audit.table(audit.parse(raw))
    assert len(rows) == 4
    assert not any("\x1b" in row for row in rows)


@pytest.mark.parametrize("args, needle", [
    (["common.setup", "--forks", "x"], "--forks"),
    (["site.setup", "--forks", "\u0664"], "--forks"),
    (["audit", "--last", "1e3"], "--last"),
    (["test.lb-failover", "--load-rate", "inf"], "--load-rate"),
    (["monitor.status", "--notifications", "-1"], "--notifications"),
    (["test.load", "--duration", "\u0661\u0660"], "--duration"),
])
def test_numeric_flags_one_line_exit_2(args, needle):
    assert_one_error_line(inv(*args), 2, needle)


def test_every_task_flag_reaches_the_project_as_text():
    """Invoke converts a flag whose kind is a number (int('x') -> traceback): none may have one."""
    from fabfile import ns

    def walk(collection, prefix=""):
        for name, task in collection.tasks.items():
            yield prefix + name, task
        for name, sub in collection.collections.items():
            yield from walk(sub, f"{prefix}{name}.")

    typed = [(name, arg.name, arg.kind.__name__) for name, task in walk(ns) for arg in task.get_arguments()
             if arg.kind not in (str, bool, list)]
    assert typed == []


@pytest.mark.parametrize("task, flag, where", [
    ("haproxy.setup", "--report", "folder"), ("api.deploy", "--report", "missing"),
    ("test.failover", "--plot", "folder"), ("monitor.rules", "--out", "file"),
])
def test_output_paths_refused_before_anything_runs(tmp_path, task, flag, where):
    (tmp_path / "afile").write_text("x")
    target = {"folder": str(tmp_path), "missing": str(tmp_path / "nope" / "r.json"),
              "file": str(tmp_path / "afile" / "sub")}[where]
    extra = ["--binary", "/bin/true"] if task == "api.deploy" else []
    done = inv(task, "--inventory", str(write_inventory(tmp_path)), *extra, flag, target)
    assert_one_error_line(done, 2, flag)
    assert done.stdout == ""  # refused before any play line


@pytest.mark.parametrize("name", ["secrets_file", "ansible_ssh_private_key_file", "vault_password_file", "token_dir"])
def test_a_name_saying_where_a_secret_lives_holds_a_path_shown_in_errors(name):
    assert not masking.is_secret_key(name)
    assert masking.is_secret_key(name.rsplit("_", 1)[0])


def test_a_file_name_in_an_error_line_is_not_taken_for_a_secret_name():
    line = "/srv/ops/secrets.yaml: secret 'jwt_secret' is missing"
    assert masking.mask_text(line) == line


def test_whatever_a_task_prints_is_masked_and_escaped(capsys):
    from fabfile.output import printable_streams

    masking.register_secret("remote-pw-77")
    with printable_streams():
        print("server web\x1b[2J1 said remote-pw-77\tok")
        print("error: \x1b]0;title\x07", file=__import__("sys").stderr)
    captured = capsys.readouterr()
    assert captured.out == "server web\\x1b[2J1 said ********\tok\n"
    assert captured.err == "error: \\x1b]0;title\\x07\n"


@pytest.mark.parametrize("steps", ["\u0661\u0660,25", "10,nan", "10,inf", "1e400"])
def test_canary_percentages_are_ascii_finite_numbers(steps):
    from fabfile.canary.plan import parse_steps
    from fabfile.values import InvalidValue

    with pytest.raises(InvalidValue, match="--canary-steps"):
        parse_steps(steps)


@pytest.mark.parametrize("text", ["p99<\u0665\u0660ms", "errors<\u0660.1%", "rate>=\uff11\uff10\uff10"])
def test_load_thresholds_take_ascii_digits_only(text):
    from fabfile.loadtest import LoadTestError
    from fabfile.loadtest.thresholds import parse_one

    with pytest.raises(LoadTestError, match="threshold"):
        parse_one(text)

"""The one masking rule, the one escaping rule and the one flag parser (fabfile/masking.py, fabfile/flags.py)."""

import os
import stat

import pytest

from fabfile import flags, masking
from fabfile.exits import UsageError
from fabfile.output import Masker, write_private, write_report


@pytest.fixture(autouse=True)
def empty_registry():
    masking.forget_registered()
    yield
    masking.forget_registered()


@pytest.mark.parametrize("name", ["password", "DB_PASSWORD", "Passwd", "api_token", "X-Auth-Token", "client_secret",
                                  "aws_credentials", "ssh_private_key", "privateKey", "PRIVATE-KEY", "api_key",
                                  "ansible_become_pass", "ansible_password", "vault_passphrase", "db_pwd"])
def test_secret_names_any_case_and_spelling(name):
    assert masking.is_secret_key(name)


@pytest.mark.parametrize("name", ["haproxy_maxconn", "keepalived_priority", "passive_mode", "bypass_cache", "keyboard",
                                  "monkey_count", "haproxy_monitor_uri", "tokenizer_threads_x"[:0] or "address"])
def test_ordinary_names_are_not_secret(name):
    assert not masking.is_secret_key(name)


def test_nested_secret_keys_masked_at_any_depth():
    data = {"db": {"password": "hunter22", "user": "veza"}, "list": [{"Token": "abc123"}], "plain": "x"}
    masked = masking.mask_data(data)
    assert masked == {"db": {"password": masking.MASK, "user": "veza"}, "list": [{"Token": masking.MASK}], "plain": "x"}


def test_registered_values_masked_everywhere_even_under_plain_names():
    masking.register_secret("s3cr3t-from-vault")
    assert masking.mask_text("connecting with s3cr3t-from-vault now") == f"connecting with {masking.MASK} now"
    assert Masker()("x s3cr3t-from-vault") == f"x {masking.MASK}"
    assert masking.mask_data({"note": "s3cr3t-from-vault"}) == {"note": masking.MASK}


@pytest.mark.parametrize("text, secret", [
    ("-o ProxyCommand='sshpass -p Tr0ub4dor ssh -W %h:%p jump'", "Tr0ub4dor"),
    ("--set 'database_password:Tr0ub4dor': expected NAME=VALUE", "Tr0ub4dor"),
    ("DB_PASSWORD=Tr0ub4dor", "Tr0ub4dor"),
    ('{"api_token": "Tr0ub4dor"}', "Tr0ub4dor"),
    ("https://veza:Tr0ub4dor@registry.example/v2", "Tr0ub4dor"),
    ("mytool --password Tr0ub4dor --verbose", "Tr0ub4dor"),
])
def test_inline_secrets_in_quoted_input_are_masked(text, secret):
    out = masking.mask_text(text)
    assert secret not in out and masking.MASK in out


def test_control_characters_escaped_newlines_kept_only_when_asked():
    assert masking.escaped("lb\x1b[31mred\x07") == "lb\\x1b[31mred\\x07"
    assert masking.escaped("a\nb", keep_newlines=True) == "a\nb"
    assert masking.escaped("a\nb") == "a\\x0ab"
    assert masking.escaped("x\u202ey") == "x\\u202ey"


def test_shown_masks_escapes_and_shortens():
    assert masking.shown("password=abcdef \x1b") == "'password=******** \\x1b'"
    assert len(masking.shown("x" * 500)) < 130


def test_reports_are_private_and_respect_a_stricter_umask(tmp_path):
    write_report(str(tmp_path / "r.json"), {"password": "abc123"}, Masker())
    assert stat.S_IMODE(os.stat(tmp_path / "r.json").st_mode) == 0o600
    assert "abc123" not in (tmp_path / "r.json").read_text()
    old = os.umask(0o277)
    try:
        write_private(str(tmp_path / "p.svg"), b"<svg/>")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "p.svg").st_mode) == 0o400


@pytest.mark.parametrize("text", ["x", "", "٤", "1e3", "0x10", "10 0", "1" * 40, "-", "１２"])
def test_integer_flags_refuse_anything_but_ascii_digits(text):
    with pytest.raises(UsageError, match="--forks"):
        flags.integer("forks", text, 1, 256)


def test_integer_flag_range_and_value():
    assert flags.integer("forks", "12", 1, 256) == 12
    with pytest.raises(UsageError, match="from 1 to 256"):
        flags.integer("forks", "0", 1, 256)


@pytest.mark.parametrize("text, seconds", [("30", 30), ("2.5s", 2.5), ("500ms", 0.5), ("5m", 300), (".5", 0.5)])
def test_durations(text, seconds):
    assert flags.duration("wait", text) == seconds


@pytest.mark.parametrize("text", ["nan", "inf", "5 minutes", "٣s", "-1", "1e999", "99999h"])
def test_bad_durations_one_line(text):
    with pytest.raises(UsageError, match="^--wait "):
        flags.duration("wait", text)


def test_numbers_percent_choice():
    assert flags.number("rate", "20.5", 0, 100) == 20.5
    assert flags.percent("error-rate", "0.5%") == 0.5
    assert flags.choice("method", "incus", ("incus", "systemctl")) == "incus"
    for bad in ("nan", "1e400", "٢٠", "20/s"):
        with pytest.raises(UsageError):
            flags.number("rate", bad)
    with pytest.raises(UsageError, match="not one of"):
        flags.choice("method", "kill\x1b", ("incus", "systemctl"))


def test_output_paths_checked_before_the_play(tmp_path):
    assert flags.output_path("report", str(tmp_path / "r.json")) == str(tmp_path / "r.json")
    with pytest.raises(UsageError, match="is a folder"):
        flags.output_path("report", str(tmp_path))
    with pytest.raises(UsageError, match="does not exist"):
        flags.output_path("plot", str(tmp_path / "missing" / "p.svg"))
    assert flags.output_path("report", None) is None


def test_input_files_folder_binary_missing(tmp_path):
    (tmp_path / "bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / "ok.yaml").write_text("a: b\n")
    assert flags.input_file("secrets", str(tmp_path / "ok.yaml"))
    for path, what in ((tmp_path, "folder"), (tmp_path / "bin", "binary"), (tmp_path / "nope", "no such")):
        with pytest.raises(UsageError, match=what):
            flags.input_file("secrets", str(path))

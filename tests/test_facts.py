"""Batched facts: every operation gets, from its host's one probe script, the very text its question
asked alone prints (so ``decide`` reads it the same), with one process per kind of fact."""

import os
import subprocess

import pytest

from fabfile.facts import Fact, ProbeBatch, file_fact, packages_fact, stat_fact, unit_fact


def sh(script: str) -> str:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30).stdout


def alone(fact: Fact) -> str:
    """What the fact's own snippet prints, read as the runner reads a snippet's output."""
    batch = ProbeBatch([fact.alone])
    return batch.facts(sh(batch.script()))[0]


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "file").write_text("content\n")
    os.chmod(tmp_path / "file", 0o640)
    (tmp_path / "dir").mkdir(mode=0o750)
    (tmp_path / "with space").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "new\nline").write_text("y")
    (tmp_path / "back\\slash").write_text("z")
    return tmp_path


NAMES = ["file", "dir", "with space", "link", "broken", "missing", "empty", "new\nline", "back\\slash", "-dash"]


def test_each_path_fact_batched_reads_as_it_does_alone(tree):
    facts = [make(str(tree / name)) for name in NAMES for make in (stat_fact, file_fact)]
    batch = ProbeBatch(facts)
    batched = batch.facts(sh(batch.script()))
    assert batched == [alone(fact) for fact in facts]
    by_fact = dict(zip(facts, batched))
    assert by_fact[stat_fact(str(tree / "missing"))] == "missing"
    assert by_fact[file_fact(str(tree / "broken"))] == "missing"  # [ -e ] follows the link, as alone
    assert by_fact[file_fact(str(tree / "file"))].split("\n")[1].endswith(" 640")
    assert by_fact[file_fact(str(tree / "dir"))] == by_fact[stat_fact(str(tree / "dir"))]  # no digest for a directory


def test_one_process_per_kind_and_the_unusual_paths_asked_alone(tree):
    facts = [make(str(tree / name)) for name in NAMES for make in (stat_fact, file_fact)]
    script = ProbeBatch(facts).script()
    # one stat and one sha256sum for the plain paths; the newline and backslash paths alone (stat twice
    # each, sha256sum once each) since the batched output could not name them unambiguously
    assert script.count("sha256sum") == 1 + 2
    assert script.count("stat -c") == 1 + 2 * 2


def test_packages_batched_read_as_alone():
    facts = [packages_fact(["dpkg", "no-such-package-here"]), packages_fact(["coreutils"]),
             packages_fact(["dpkg"]), packages_fact(["weird name"])]
    batch = ProbeBatch(facts)
    assert batch.script().count("dpkg-query") == 2  # the name with a space asked alone
    batched = batch.facts(sh(batch.script()))
    assert batched == [alone(fact) for fact in facts]
    assert batched[1] == "coreutils installed"


def test_units_batched_read_as_alone_and_in_their_own_order():
    facts = [unit_fact("haproxy"), unit_fact("no-such-unit"), unit_fact("haproxy")]
    batch = ProbeBatch(facts)
    assert batch.script().count("systemctl show") == 1
    assert batch.facts(sh(batch.script())) == [alone(fact) for fact in facts]
    # systemctl prints one block per unit, in the order asked
    output = ("\n@@veza-fact@@ units\nActiveState=active\nUnitFileState=enabled\n\n"
              "ActiveState=inactive\nUnitFileState=\n")
    assert batch.facts(output) == ["ActiveState=active\nUnitFileState=enabled", "ActiveState=inactive\nUnitFileState=",
                                   "ActiveState=active\nUnitFileState=enabled"]
    # a systemctl that answered nothing usable (no systemd): every unit reads as it would alone, empty
    assert ProbeBatch([unit_fact("a"), unit_fact("b")]).facts("\n@@veza-fact@@ units\n") == ["", ""]


def test_snippets_run_once_each_and_output_before_the_first_marker_is_ignored(tmp_path):
    counter = tmp_path / "count"
    snippet = f"echo run >> {counter}; cat {counter} | wc -l"
    batch = ProbeBatch([snippet, "echo other", snippet])
    answers = batch.facts("whatever a change printed\n" + sh(batch.script()))
    assert answers == ["1", "other", "1"]
    assert counter.read_text() == "run\n"
    assert len(ProbeBatch([])) == 0

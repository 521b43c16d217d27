"""The README against the code it describes: its task table against ``inv --list``, every flag it names
against the task's own flags (``inv --help TASK``), its layout section against the tree, and no test
counts (they go stale the day a test is added)."""

import re

import pytest

from conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def all_tasks() -> dict:
    """Every task ``inv --list`` shows, by its dotted name."""
    from fabfile import ns

    return {name: ns[name] for name in ns.task_names}


def flags_of(task) -> set:
    """The long flags ``inv --help TASK`` lists (``--no-X`` too for a flag that defaults to on)."""
    flags = set()
    for argument in task.get_arguments():
        long = next(name for name in argument.names if len(name) > 1)
        flags.add(f"--{long}")
        if argument.kind is bool and argument.default is True:
            flags.add(f"--no-{long}")
    return flags


def table_rows() -> list:
    """(task names, the row's text) for every row of the Tasks table."""
    rows = []
    for line in section("Tasks").splitlines():
        if not line.startswith("| `inv "):
            continue
        first = line.split(" | ")[0]
        names = [chunk.split()[0].removeprefix("inv ") if not chunk.startswith("inv ") else chunk.split()[1]
                 for chunk in re.findall(r"`([^`]+)`", first)]
        rows.append((names, line))
    return rows


def test_the_task_table_lists_exactly_the_tasks_of_inv_list():
    documented = {name for names, _ in table_rows() for name in names}
    tasks = set(all_tasks())
    assert not tasks - documented, f"tasks missing from the README's table: {sorted(tasks - documented)}"
    assert not documented - tasks, f"the README's table names tasks inv --list does not have: {sorted(documented - tasks)}"


MENTION = re.compile(r"`(?:inv )?([a-z][a-z]*\.[a-z][\w-]*|audit)((?: [^`|]*)?)`")


def test_every_flag_the_task_table_names_is_a_flag_of_that_task():
    """Flags in a row belong to the row's tasks, except those inside another task's mention (checked below)."""
    tasks = all_tasks()
    for names, row in table_rows():
        flags = set().union(*(flags_of(tasks[name]) for name in names if name in tasks))
        own = MENTION.sub(lambda m: m.group(0) if m.group(1) in names else "", row.split(" | ", 1)[1])
        own = row.split(" | ")[0] + own
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", own))
        assert named <= flags, f"{', '.join(names)}: the README names {sorted(named - flags)}, not flags of the task"


def test_every_task_mention_in_the_readme_uses_real_flags():
    """```inv TASK --flag ...``` and ```TASK --flag``` anywhere: the flags are that task's."""
    tasks = all_tasks()
    for name, rest in MENTION.findall(README):
        if name not in tasks:
            continue  # prose like `inv --list`, checked by the table test
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest))
        assert named <= flags_of(tasks[name]), f"`inv {name}{rest}`: {sorted(named - flags_of(tasks[name]))} unknown"


def test_the_limit_statement_matches_the_tasks():
    """The README says exactly which tasks take --limit."""
    tasks = all_tasks()
    with_limit = sorted(name for name, task in tasks.items() if "--limit" in flags_of(task))
    statement = re.search(r"`--limit NAME\[,NAME\]` \(hosts or groups\) is taken by (.+?)\. The others", section("Tasks"), re.S)
    assert statement, "the Tasks section no longer says which tasks take --limit"
    assert sorted(re.findall(r"`([a-z][\w.-]*)`", statement.group(1))) == with_limit


def test_the_tasks_without_limit_are_each_named():
    """The sentence after the --limit list names every other task (``lab.*`` for the lab's)."""
    tasks = all_tasks()
    without = {name for name, task in tasks.items() if "--limit" not in flags_of(task)}
    others = re.search(r"The others take no `--limit` and\s+pick their hosts themselves: (.+?)\n\n", section("Tasks"),
                       re.S)
    assert others, "the Tasks section no longer names the tasks without --limit"
    named = set()
    for name in re.findall(r"`([a-z][\w.*-]*)`", others.group(1)):
        named |= {task for task in tasks if task.startswith(name[:-1])} if name.endswith(".*") else {name}
    assert named == without, f"README vs tasks: missing {sorted(without - named)}, extra {sorted(named - without)}"


@pytest.mark.parametrize("name", ["api.deploy", "test.reload"])
def test_the_flags_read_from_a_task_are_what_inv_help_prints(name):
    """``flags_of`` (what the README checks use) against the real ``inv --help TASK`` output."""
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-m", "invoke", "--help", name], cwd=REPO, capture_output=True,
                           text=True, timeout=60).stdout
    columns = [line.strip().split("  ")[0] for line in shown.splitlines() if line.startswith("  -")]
    printed = set()
    for flag in re.findall(r"--(?:\[no-\])?[a-z][a-z0-9-]*", " ".join(columns)):
        printed |= {flag.replace("[no-]", ""), flag.replace("[no-]", "no-")}
    assert printed == flags_of(all_tasks()[name])


def layout_block() -> list:
    block = section("Layout")
    return block[block.index("```\n") + 4:block.index("\n```", block.index("```\n") + 4)].splitlines()


def test_every_path_the_layout_names_exists():
    for line in layout_block():
        if not line or line.startswith(" "):
            continue
        path = line.split()[0]
        if "<" in path:
            path = path.split("<")[0]
        assert (REPO / path).exists(), f"the README's layout names {path}, which does not exist"


def test_the_layout_names_every_top_level_entry_of_the_repository():
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.split()
    top = {path.split("/")[0] for path in tracked} - {"README.md", ".gitignore"}
    named = {line.split()[0].rstrip("/").split("/")[0] for line in layout_block() if line and not line.startswith(" ")}
    assert not top - named, f"top-level entries missing from the README's layout: {sorted(top - named)}"


def test_the_layout_names_every_module_and_package_of_fabfile():
    text = "\n".join(layout_block())
    listed = set(re.findall(r"\b([a-z_0-9]+)\.py\b", text)) | set(re.findall(r"\b([a-z_0-9]+)/", text))
    fabfile = REPO / "fabfile"
    present = {p.stem for p in fabfile.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in fabfile.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert not present - listed, f"fabfile entries missing from the README's layout: {sorted(present - listed)}"
    stale = {name for name in re.findall(r"^  ([a-z_0-9]+)\.py", text, re.M)} - present
    assert not stale, f"the README's layout lists modules that no longer exist: {sorted(stale)}"


def test_each_package_line_lists_exactly_its_modules():
    """``  pkg/   a, b, sub/: what it does`` names every module and subpackage of the package and nothing else;
    a subpackage has its own line (``  pkg/sub/   c, d: ...``)."""
    packages = set()
    for line in layout_block():
        match = re.match(r"^  ([a-z_/]+)/\s+([a-z_0-9/, ]+):", line)
        if not match:
            continue
        package = REPO / "fabfile" / match.group(1)
        packages.add(package)
        named = {name.strip() for name in match.group(2).split(",")}
        modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"} | {
            f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").exists()}
        assert named == modules, f"{match.group(1)}/: README {sorted(named)} vs tree {sorted(modules)}"
    subpackages = {p.parent for p in (REPO / "fabfile").glob("*/*/__init__.py")}
    assert not subpackages - packages, f"subpackages without their README line: {sorted(subpackages - packages)}"


def test_the_readme_holds_no_test_counts():
    counts = re.findall(r"\b\d+ (?:passed|skipped)\b", README)
    assert not counts, f"test counts go stale; drop them: {counts}"

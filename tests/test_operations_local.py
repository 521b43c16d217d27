"""Operations against the local transport in a temporary directory: changed, then ok; --check changes nothing."""

import io
import json
import os
import pwd


from fabfile.inventory import Host
from fabfile.operations import directory, file
from fabfile.output import Masker, Output, write_report
from fabfile.tasks.support import masker_for
from fabfile.runner import HostPlan, run_host, run_play
from fabfile.transports import LocalTransport

ME = pwd.getpwuid(os.getuid()).pw_name


def local_host():
    return Host(name="box", inventory_vars={"connection": "local"}, groups=["all"])


def run(operations, *, check=False, diff=False, handlers=None, masker=None):
    stream = io.StringIO()
    output = Output(masker or Masker(), stream)
    plan = HostPlan(host=local_host(), operations=operations, handlers=handlers or {})
    results = run_host(plan, check=check, diff=diff, output=output, transport_factory=LocalTransport)
    return results, stream.getvalue()


def statuses(results):
    return [r.status for r in results]


def test_file_and_directory_changed_then_ok(tmp_path):
    target_dir = tmp_path / "etc" / "veza"
    target = target_dir / "app.conf"
    operations = lambda: [directory(str(target_dir), ME, ME, "0750"),
                          file(str(target), "port=8080\n", owner=ME, group=ME, mode="0640")]
    first, _ = run(operations())
    assert statuses(first) == ["changed", "changed"]
    assert target.read_text() == "port=8080\n"
    assert oct(target.stat().st_mode & 0o777) == "0o640"
    assert oct(target_dir.stat().st_mode & 0o777) == "0o750"
    second, _ = run(operations())
    assert statuses(second) == ["ok", "ok"]


def test_mode_drift_is_repaired_without_rewrite(tmp_path):
    target = tmp_path / "f"
    run([file(str(target), "x\n", owner=ME, group=ME, mode="0644")])
    os.chmod(target, 0o600)
    results, _ = run([file(str(target), "x\n", owner=ME, group=ME, mode="0644")])
    assert statuses(results) == ["changed"]
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_check_mode_changes_nothing_and_says_what_would(tmp_path):
    target = tmp_path / "f"
    target.write_text("old\n")
    results, printed = run([file(str(target), "new\n", owner=ME, group=ME), directory(str(tmp_path / "d"), ME, ME)],
                           check=True, diff=True)
    assert statuses(results) == ["changed", "changed"]
    assert "(check)" in printed
    assert "-old" in printed and "+new" in printed
    assert target.read_text() == "old\n"
    assert not (tmp_path / "d").exists()
    assert not (tmp_path / "f.veza-tmp").exists()


def test_validate_failure_leaves_target_untouched(tmp_path):
    target = tmp_path / "cfg"
    target.write_text("good\n")
    bad = file(str(target), "bad\n", owner=ME, group=ME, validate="grep -q good {path}")
    results, printed = run([bad, directory(str(tmp_path / "after"), ME, ME)])
    assert statuses(results) == ["failed", "skipped"]
    assert target.read_text() == "good\n"
    assert not (tmp_path / "cfg.veza-tmp").exists()
    assert not (tmp_path / "after").exists()


def test_validate_runs_on_the_temporary_file_and_backup_is_kept(tmp_path):
    target = tmp_path / "cfg"
    target.write_text("v1\n")
    results, _ = run([file(str(target), "v2 good\n", owner=ME, group=ME, validate="grep -q good {path}", backup=True)])
    assert statuses(results) == ["changed"]
    assert target.read_text() == "v2 good\n"
    assert (tmp_path / "cfg.prev").read_text() == "v1\n"


def test_handlers_run_once_at_the_end_only_when_notified(tmp_path):
    log = tmp_path / "handler.log"
    handlers = {"restart app": f"echo restarted >> {log}", "reload other": f"echo other >> {log}"}
    operations = lambda: [file(str(tmp_path / "a"), "1\n", owner=ME, group=ME, notify=["restart app"]),
                          file(str(tmp_path / "b"), "2\n", owner=ME, group=ME, notify=["restart app"])]
    results, _ = run(operations(), handlers=handlers)
    assert statuses(results) == ["changed", "changed", "changed"]
    assert results[-1].step == "handler: restart app"
    assert log.read_text() == "restarted\n"
    results, _ = run(operations(), handlers=handlers)
    assert statuses(results) == ["ok", "ok"]
    assert log.read_text() == "restarted\n"


def test_after_a_failed_handler_the_later_ones_wait_for_the_next_run(tmp_path):
    log, broken = tmp_path / "handler.log", tmp_path / "broken"
    broken.write_text("")
    handlers = {"reload first": f"test ! -e {broken} && echo first >> {log}", "reload second": f"echo second >> {log}"}
    operation = lambda content: [file(str(tmp_path / "c"), content, owner=ME, group=ME,
                                      notify=["reload first", "reload second"])]
    results, _ = run(operation("1\n"), handlers=handlers)
    assert [(r.step, r.status) for r in results[-2:]] == [("handler: reload first", "failed"),
                                                          ("handler: reload second", "skipped")]
    assert not log.exists()
    broken.unlink()
    results, _ = run(operation("1\n"), handlers=handlers)  # nothing changes: both still run, from the record
    assert statuses(results) == ["ok", "changed", "changed"]
    assert log.read_text() == "first\nsecond\n"


def test_secrets_are_masked_in_diff_output_and_report(tmp_path):
    target = tmp_path / "app.env"
    target.write_text("JWT_SECRET=old-secret-value\n")
    masker = Masker(["old-secret-value", "s3cr3t-new-value"])
    stream = io.StringIO()
    output = Output(masker, stream)
    plan = HostPlan(host=local_host(), operations=[file(str(target), "JWT_SECRET=s3cr3t-new-value\n", owner=ME, group=ME)],
                    handlers={})
    result = run_play("mask", [plan], diff=True, output=output, transport_factory=LocalTransport)
    printed = stream.getvalue()
    assert "JWT_SECRET=********" in printed
    assert "s3cr3t" not in printed and "old-secret" not in printed
    report = tmp_path / "report.json"
    result.steps[0].detail = "failed with s3cr3t-new-value in stderr"
    write_report(str(report), result.to_json(), masker)
    assert "s3cr3t" not in report.read_text()
    assert json.loads(report.read_text())["recap"]["box"]["changed"] == 1


def test_secret_named_vars_are_collected_for_masking():
    host = Host(name="h", inventory_vars={"db_password": "hunter22", "api_token": "tok-123", "port": 8080,
                                          "secret_vars": ["license"], "license": "LIC-999"}, groups=[])
    masker = masker_for([host])
    assert masker("hunter22 tok-123 LIC-999 8080") == "******** ******** ******** 8080"


def test_masking_reaches_structured_data_and_each_line_of_a_multiline_secret():
    masker = Masker(['pa"ss\\wo\nrd-line2'])
    report = masker.data({"detail": 'value pa"ss\\wo', "lines": ["rd-line2 here"], "n": 3})
    text = json.dumps(report)
    assert 'pa\\"ss' not in text and "rd-line2" not in text and report["n"] == 3
    assert masker(json.dumps({"k": 'x pa"ss\\wo\nrd-line2'})) == '{"k": "x ********"}'


def test_recap_counts_and_failed_exit(tmp_path):
    stream = io.StringIO()
    plan = HostPlan(host=local_host(), operations=[file(str(tmp_path / "nodir" / "x" / "f"), "1", owner=ME, group=ME)],
                    handlers={})
    result = run_play("fails", [plan], output=Output(Masker(), stream), transport_factory=LocalTransport)
    assert result.failed
    assert "box              : ok=0 changed=0 failed=1" in stream.getvalue()


def most_at_once(lines):
    running = peak = 0
    for line in lines:
        running += 1 if line == "start" else -1
        peak = max(peak, running)
    return peak


def test_restart_handlers_stay_within_the_capacity_floor(tmp_path):
    """Four hosts of one pool configured at once; with a floor of 3 UP only one restarts at a time,
    with a floor of 2, two."""
    from fabfile.capacity import CapacityFloor
    from fabfile.runner import restart_slots

    for floor, expected in ((3, 1), (2, 2)):
        log = tmp_path / f"restarts-{floor}.log"
        plans = []
        for index in range(4):
            host = Host(name=f"box{index}", inventory_vars={"connection": "local"}, groups=["all", "api"])
            target = tmp_path / f"floor{floor}-{index}.env"
            plans.append(HostPlan(host=host, operations=[file(str(target), "1\n", owner=ME, group=ME, notify=["restart"])],
                                  handlers={"restart": f"echo start >> {log}; sleep 0.3; echo end >> {log}"}))
        restart_slots(plans, "api", CapacityFloor.parse("api_pool", floor, 4))
        result = run_play("setup", plans, output=Output(Masker(), io.StringIO()), forks=4,
                          transport_factory=LocalTransport)
        lines = log.read_text().split()
        assert not result.failed and lines.count("start") == 4
        assert most_at_once(lines) == expected


def test_service_decides_from_systemctl_show():
    from fabfile.operations import service

    commands = lambda op, fact: [c.command for c in op.decide(fact)]  # noqa: E731
    running = service("haproxy")
    assert commands(running, "ActiveState=active\nUnitFileState=enabled") == []
    assert commands(running, "ActiveState=inactive\nUnitFileState=") == [
        "systemctl enable haproxy >/dev/null 2>&1", "systemctl start haproxy"]
    # a unit stuck at its start limit is reset first, or `start` is refused
    assert commands(running, "ActiveState=failed\nUnitFileState=enabled") == [
        "systemctl reset-failed haproxy; systemctl start haproxy"]
    assert commands(service("veza-api", running=None), "ActiveState=inactive\nUnitFileState=enabled") == []
    assert commands(service("x", enabled=False, running=False), "ActiveState=active\nUnitFileState=enabled") == [
        "systemctl disable x >/dev/null 2>&1", "systemctl stop x"]


class CountingTransport(LocalTransport):
    """The local transport, counting round trips (commands and uploads)."""

    trips = 0

    def _run(self, command, **kwargs):
        CountingTransport.trips += 1
        return super()._run(command, **kwargs)

    def _put(self, *args):
        CountingTransport.trips += 1
        return super()._put(*args)


def test_a_change_is_seen_by_the_later_steps_in_the_same_round_trip(tmp_path):
    """The later steps' facts are probed again after a change, riding on the change's own command."""
    target = tmp_path / "f"
    same = lambda: file(str(target), "x\n", owner=ME, group=ME, mode="0644")  # noqa: E731
    stream = io.StringIO()
    plan = HostPlan(host=local_host(), operations=[directory(str(tmp_path / "d"), ME, ME, "0755"), same(), same()],
                    handlers={})
    CountingTransport.trips = 0
    results = run_host(plan, check=False, diff=False, output=Output(Masker(), stream),
                       transport_factory=CountingTransport)
    # The second file step sees what the first wrote: ok. Round trips: the first probe, the directory
    # (with the probe), the upload, the rename (with the probe); none for the second file step.
    assert statuses(results) == ["changed", "changed", "ok"]
    assert CountingTransport.trips == 4


def test_an_interrupted_play_stops_each_host_before_its_next_step_and_the_next_run_converges(tmp_path):
    import threading

    log = tmp_path / "handler.log"
    handlers = {"restart app": f"echo restarted >> {log}"}
    stopping = threading.Event()

    class CtrlCDuringTheFirstChange(LocalTransport):
        def _run(self, command, **kwargs):
            if "mv -f" in command:
                stopping.set()  # what run_play does when the main thread takes the Ctrl-C
            return super()._run(command, **kwargs)

    operations = lambda: [file(str(tmp_path / "a"), "1\n", owner=ME, group=ME, notify=["restart app"]),  # noqa: E731
                          directory(str(tmp_path / "d"), ME, ME, "0755")]
    plan = HostPlan(host=local_host(), operations=operations(), handlers=handlers)
    results = run_host(plan, check=False, diff=False, output=Output(Masker(), io.StringIO()),
                       transport_factory=CtrlCDuringTheFirstChange, stopping=stopping)
    assert [(r.status, r.detail) for r in results] == [("changed", ""), ("skipped", "interrupted")]
    assert (tmp_path / "a").read_text() == "1\n" and not (tmp_path / "d").exists() and not log.exists()
    results, _ = run(operations(), handlers=handlers)  # the next run: the rest, and the handler still owed
    assert statuses(results) == ["ok", "changed", "changed"] and log.read_text() == "restarted\n"
    # A host whose turn comes after the interrupt is not touched at all.
    untouched = HostPlan(host=local_host(), operations=[directory(str(tmp_path / "e"), ME, ME, "0755")], handlers={})
    results = run_host(untouched, check=False, diff=False, output=Output(Masker(), io.StringIO()),
                       transport_factory=CtrlCDuringTheFirstChange, stopping=stopping)
    assert [r.status for r in results] == ["skipped"] and not (tmp_path / "e").exists()

"""Async calls and tasks (XENAPI.md section 1, "Async calls and tasks")."""

import re
import time

import pytest

import xapilib
from xapilib import XapiError, expect_error

REF = r"OpaqueRef:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def vm_record(session, name):
    tmpl = session.VM.get_by_name_label("Other install media")[0]
    rec = session.VM.get_record(tmpl)
    rec.update(name_label=name, is_a_template=False, other_config={})
    return rec


def wait_task(session, task, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = session.task.get_status(task)
        if st not in ("pending", "cancelling"):
            return st
        time.sleep(0.02)
    raise AssertionError("task %s still %s after %ss" % (task, st, timeout))


def fields_of(cls):
    return [f["name"] for f in xapilib.load_schema_classes()[cls]["fields"]]


def test_async_create_returns_task_at_once(xapid, session):
    t0 = time.monotonic()
    task = session.call("Async.VM.create", vm_record(session, "async-made"))
    assert time.monotonic() - t0 < 1.0
    assert re.fullmatch(REF, task), task
    assert task in session.task.get_all()
    assert wait_task(session, task) == "success"
    rec = session.task.get_record(task)
    assert sorted(rec) == sorted(fields_of("task"))
    m = re.fullmatch(r"<value>(%s)</value>" % REF, rec["result"])
    assert m, rec["result"]
    assert session.task.get_result(task) == rec["result"]
    vm = m.group(1)
    assert session.VM.get_name_label(vm) == "async-made"
    assert rec["progress"] == 1.0
    assert rec["error_info"] == []
    assert rec["name_label"] == "Async.VM.create"
    assert rec["resident_on"] == session.host.get_all()[0]
    assert rec["subtask_of"] == "OpaqueRef:NULL"
    assert str(rec["finished"]) >= str(rec["created"])
    assert "cancel" not in rec["allowed_operations"]
    session.task.destroy(task)
    e = expect_error(session.task.get_record, task)
    assert e.details == ["HANDLE_INVALID", "task", task]


def test_async_destroy_void_result(session):
    vm = session.VM.create(vm_record(session, "to-destroy"))
    task = session.call("Async.VM.destroy", vm)
    assert wait_task(session, task) == "success"
    assert session.task.get_result(task) == ""
    assert vm not in session.VM.get_all()
    session.task.destroy(task)


def test_async_bad_ref_fails_at_once(session):
    before = set(session.task.get_all())
    e = expect_error(session.call, "Async.VM.destroy", "OpaqueRef:bogus")
    assert e.details == ["HANDLE_INVALID", "VM", "OpaqueRef:bogus"]
    assert set(session.task.get_all()) == before  # no task was made


def test_async_count_mismatch_fails_at_once(session):
    e = expect_error(session.call, "Async.VM.create")
    assert e.details == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.create",
                         "1", "0"]


def test_async_failure_recorded_in_task(session):
    rec = vm_record(session, "incomplete")
    del rec["memory_static_max"]
    task = session.call("Async.VM.create", rec)
    assert wait_task(session, task) == "failure"
    rec = session.task.get_record(task)
    assert rec["error_info"][0] in ("INTERNAL_ERROR", "FIELD_TYPE_ERROR")
    assert rec["result"] == ""
    assert session.VM.get_by_name_label("incomplete") == []
    session.task.destroy(task)


def test_async_not_implemented(session):
    xs = xapilib.load_xagen_schema()
    host = session.host.get_all()[0]
    un = set(xapilib.unimplemented_messages())
    pick = None
    for m in xs.messages:
        if (m["wire"] in un and m["async"] and not m["hidden"]
                and m["session"]
                and all(p["type"] == "host ref"
                        for p in m["params"][:m["n_required"]])):
            pick = m
            break
    if pick is None:
        pytest.skip("no unimplemented async message taking only a host")
    args = [host] * pick["n_required"]
    task = session.call("Async." + pick["wire"], *args)
    assert wait_task(session, task) == "failure"
    assert session.task.get_error_info(task) == ["NOT_IMPLEMENTED",
                                                 pick["wire"]]
    session.task.destroy(task)


def test_async_over_json(xapid, session):
    tmpl = session.VM.get_by_name_label("Other install media")[0]
    rec = xapid.json_call("VM.get_record", session.ref, tmpl)
    rec.update(name_label="json-async", is_a_template=False, other_config={})
    task = xapid.json_call("Async.VM.create", session.ref, rec)
    assert re.fullmatch(REF, task)
    assert wait_task(session, task) == "success"
    _, doc = xapid.jsonrpc("task.get_record", [session.ref, task])
    assert doc["result"]["status"] == "success"
    assert isinstance(doc["result"]["progress"], float)
    session.task.destroy(task)


def test_task_create_cancel_destroy(session):
    task = session.task.create("my-task", "described")
    rec = session.task.get_record(task)
    assert rec["status"] == "pending"
    assert rec["name_label"] == "my-task"
    assert rec["name_description"] == "described"
    assert rec["progress"] == 0.0
    assert "cancel" in rec["allowed_operations"]
    assert task in session.task.get_by_name_label("my-task")
    session.task.cancel(task)
    assert session.task.get_status(task) in ("cancelling", "cancelled")
    e = expect_error(session.task.cancel, task)
    assert e.code == "OPERATION_NOT_ALLOWED"
    session.task.destroy(task)
    e = expect_error(session.task.get_status, task)
    assert e.details == ["HANDLE_INVALID", "task", task]
    e = expect_error(session.task.destroy, task)
    assert e.details == ["HANDLE_INVALID", "task", task]


def test_cancel_finished_task_not_allowed(session):
    task = session.call("Async.VM.create", vm_record(session, "done"))
    assert wait_task(session, task) == "success"
    e = expect_error(session.task.cancel, task)
    assert e.code == "OPERATION_NOT_ALLOWED"
    assert session.task.get_status(task) == "success"
    session.task.destroy(task)


def test_task_events(session):
    tok = session.call("event.from", ["task"], "", 0.0)["token"]
    task = session.call("Async.VM.create", vm_record(session, "evt"))
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = session.call("event.from", ["task/" + task], tok, 5.0)
        tok = r["token"]
        for e in r["events"]:
            seen.append((e["operation"], e.get("snapshot", {}).get("status")))
        if seen and seen[-1][1] == "success":
            break
    assert seen and seen[0][0] == "add", seen
    assert seen[-1] == ("mod", "success") or seen[-1] == ("add", "success"), \
        seen
    session.task.destroy(task)


def test_many_async_calls(xapid, session):
    tasks = [session.call("Async.VM.create", vm_record(session, "bulk-%d" % i))
             for i in range(40)]
    assert len(set(tasks)) == 40
    results = set()
    for t in tasks:
        assert wait_task(session, t) == "success"
        results.add(session.task.get_result(t))
        session.task.destroy(t)
    assert len(results) == 40
    assert len(session.VM.get_all_records_where(
        'field "name__label" = "bulk-7"')) == 1

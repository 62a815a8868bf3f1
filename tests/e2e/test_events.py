"""Events (XENAPI.md section 5): event.from, tokens, coalescing, class
filters, latency, timeouts, the legacy register/next API, inject."""

import re
import statistics
import threading
import time
import uuid

import pytest

import xapilib
from xapilib import XapiError, expect_error

TOKEN_RE = re.compile(r"^\d{20},\d{20}$")


def new_vm(session, name):
    tmpl = session.VM.get_by_name_label("Other install media")[0]
    rec = session.VM.get_record(tmpl)
    rec.update(name_label=name, is_a_template=False, other_config={})
    return session.VM.create(rec)


def token_now(session, classes=("*",)):
    return session.call("event.from", list(classes), "", 0.0)["token"]


def ev_from(session, classes, token, timeout):
    return session.call("event.from", list(classes), token, float(timeout))


class Waiter(threading.Thread):
    """event.from on its own connection; records the answer and when."""

    def __init__(self, x, ref, classes, token, timeout):
        super().__init__(daemon=True)
        self.api = x.api()
        self.ref = ref
        self.args = (list(classes), token, float(timeout))
        self.result = None
        self.error = None
        self.t_done = None

    def run(self):
        try:
            self.result = self.api.call("event.from", self.ref, *self.args)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e
        self.t_done = time.monotonic()


@pytest.fixture(scope="module")
def vm(session):
    return new_vm(session, "events-vm")


# ---- initial sync ---------------------------------------------------------------


def test_initial_sync_returns_every_object(xapid, session):
    r = ev_from(session, ["*"], "", 0.0)
    assert TOKEN_RE.match(r["token"]), r["token"]
    got = {(e["class"], e["ref"]) for e in r["events"]}
    assert all(e["operation"] == "add" for e in r["events"])
    assert len(got) == len(r["events"]), "one event per object"
    classes = xapilib.load_schema_classes()
    expect = set()
    counts = r["valid_ref_counts"]
    for cls, d in classes.items():
        if "get_all" not in d.get("implicit", []):
            continue
        refs = session.call(cls + ".get_all")
        expect |= {(cls.lower(), ref) for ref in refs}
        assert counts.get(cls.lower()) == len(refs), cls
    assert expect <= got
    assert not any(c == "session" for c, _ in got)
    assert {c for c, _ in got} >= {"pool", "host", "vm", "host_metrics",
                                   "role"}
    wire = {"vm": "VM", "pool": "pool", "host": "host", "role": "role"}
    for e in r["events"]:
        assert {"id", "timestamp", "class", "operation", "ref",
                "snapshot"} <= set(e)
        if e["class"] in wire:
            assert e["snapshot"] == session.call(
                wire[e["class"]] + ".get_record", e["ref"])


def test_valid_ref_counts_are_i4_in_xml(xapid, session):
    r = xapid.xml("event.from", session.ref, ["pool"], "", 0.0)
    t = r.body.decode()
    assert "<member><name>pool</name><value><i4>1</i4></value></member>" in t
    assert "<member><name>host</name><value><i4>1</i4></value></member>" in t


def test_initial_sync_of_one_class(session):
    r = ev_from(session, ["host"], "", 0.0)
    assert [(e["class"], e["operation"]) for e in r["events"]] == \
        [("host", "add")]
    assert r["events"][0]["ref"] == session.host.get_all()[0]


# ---- add / mod / del -----------------------------------------------------------


def test_mod_with_snapshot(session, vm):
    tok = token_now(session)
    name = "mod-" + uuid.uuid4().hex[:6]
    session.VM.set_name_label(vm, name)
    r = ev_from(session, ["vm"], tok, 5)
    evs = [e for e in r["events"] if e["ref"] == vm]
    assert len(evs) == 1, r["events"]
    e = evs[0]
    assert e["operation"] == "mod" and e["class"] == "vm"
    assert e["snapshot"]["name_label"] == name
    assert e["snapshot"] == session.VM.get_record(vm)
    assert r["token"] > tok


def test_coalescing_one_event_per_object(session, vm):
    tok = token_now(session)
    for i in range(5):
        session.VM.set_name_description(vm, "d%d" % i)
    r = ev_from(session, ["vm/" + vm], tok, 5)
    assert len(r["events"]) == 1
    assert r["events"][0]["snapshot"]["name_description"] == "d4"


def test_add_then_del(session):
    tok = token_now(session)
    ref = new_vm(session, "ev-add")
    session.VM.set_name_label(ref, "ev-add-2")
    r = ev_from(session, ["vm"], tok, 5)
    evs = [e for e in r["events"] if e["ref"] == ref]
    assert [e["operation"] for e in evs] == ["add"]  # add, even if modified
    assert evs[0]["snapshot"]["name_label"] == "ev-add-2"
    tok2 = r["token"]
    session.VM.destroy(ref)
    r = ev_from(session, ["vm"], tok2, 5)
    evs = [e for e in r["events"] if e["ref"] == ref]
    assert [e["operation"] for e in evs] == ["del"]
    assert "snapshot" not in evs[0] or not evs[0]["snapshot"]


def test_created_and_deleted_inside_window_not_reported(session, vm):
    tok = token_now(session)
    ref = new_vm(session, "ephemeral")
    session.VM.destroy(ref)
    session.VM.set_name_description(vm, "marker")
    r = ev_from(session, ["vm"], tok, 5)
    refs = [e["ref"] for e in r["events"]]
    assert vm in refs
    assert ref not in refs


# ---- filters -----------------------------------------------------------------------


def test_class_filter(session, vm):
    host = session.host.get_all()[0]
    tok = token_now(session)
    session.VM.set_name_description(vm, "filter-1")
    session.host.set_name_description(host, "filter-1")
    r = ev_from(session, ["vm"], tok, 5)
    assert {e["class"] for e in r["events"]} == {"vm"}
    r = ev_from(session, ["VM"], tok, 5)  # case-insensitive
    assert {e["class"] for e in r["events"]} == {"vm"}
    r = ev_from(session, ["host", "vm"], tok, 5)
    assert {e["class"] for e in r["events"]} >= {"vm", "host"}
    r = ev_from(session, ["*"], tok, 5)
    assert {e["class"] for e in r["events"]} >= {"vm", "host"}


def test_object_filter(session, vm):
    other = new_vm(session, "other")
    tok = token_now(session)
    session.VM.set_name_description(other, "x")
    session.VM.set_name_description(vm, "y")
    r = ev_from(session, ["vm/" + vm], tok, 5)
    assert [e["ref"] for e in r["events"]] == [vm]
    r = ev_from(session, ["vm/" + other], tok, 5)
    assert [e["ref"] for e in r["events"]] == [other]
    session.VM.destroy(other)


# ---- blocking and latency -----------------------------------------------------------


def test_timeout_expiry_returns_empty(session, vm):
    tok = token_now(session)
    t0 = time.monotonic()
    r = ev_from(session, ["vm/" + vm], tok, 1.0)
    dt = time.monotonic() - t0
    assert r["events"] == []
    assert 0.9 <= dt <= 2.5, dt
    assert TOKEN_RE.match(r["token"])


def test_zero_timeout_returns_at_once(session, vm):
    tok = token_now(session)
    t0 = time.monotonic()
    r = ev_from(session, ["vm/" + vm], tok, 0.0)
    assert r["events"] == [] and time.monotonic() - t0 < 0.5


def test_wakeup_latency(xapid, session, vm):
    """A waiting event.from answers within 50 ms of another client's
    acknowledged write (median of several tries)."""
    writer = xapid.login()
    lat = []
    for i in range(9):
        tok = token_now(session)
        w = Waiter(xapid, session.ref, ["vm/" + vm], tok, 5)
        w.start()
        time.sleep(0.15)  # let it park
        assert w.t_done is None, "answered before any write"
        writer.VM.set_name_description(vm, "lat-%d" % i)
        t_ack = time.monotonic()
        w.join(6)
        assert w.error is None, w.error
        assert [e["ref"] for e in w.result["events"]] == [vm]
        lat.append(max(0.0, w.t_done - t_ack))
    assert statistics.median(lat) < 0.05, lat


def test_bad_token(session):
    for tok in ("garbage", "1,2,3", "12", "1,", "abc,def", "1;2"):
        e = expect_error(session.call, "event.from", ["*"], tok, 0.0)
        assert e.details == ["EVENT_FROM_TOKEN_PARSE_FAILURE", tok], tok


def test_bad_class(session):
    for c in ("nosuchclass", "session_x", "", "/OpaqueRef:x"):
        e = expect_error(session.call, "event.from", [c], "", 0.0)
        assert e.code == "EVENT_SUBSCRIPTION_PARSE_FAILURE", (c, e.details)
        assert e.params == [c] or c in e.params


def test_logout_wakes_waiter(xapid):
    s = xapid.login()
    tok = token_now(s)
    w = Waiter(xapid, s.ref, ["vm"], tok, 30)
    w.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    s.logout()
    w.join(5)
    assert not w.is_alive()
    assert isinstance(w.error, XapiError), (w.result, w.error)
    assert w.error.details == ["SESSION_INVALID", s.ref]
    assert w.t_done - t0 < 1.0


def test_logout_during_sweeps_wakes_waiter(xapid, session, vm):
    """A logout that lands while the event thread is busy re-checking
    every parked waiter (a write storm, hundreds of waiters) still
    answers the logged-out session's waiter at once: the sweep must not
    put it back on the list after the logout looked for it."""
    busy_vm = new_vm(session, "events-storm")
    tok = token_now(session)
    crowd = [Waiter(xapid, session.ref, ["vm/" + vm], tok, 30)
             for _ in range(150)]
    for w in crowd:
        w.start()
    stop = threading.Event()

    def storm():
        writer = xapid.login()
        i = 0
        while not stop.is_set():
            writer.VM.set_name_description(busy_vm, "storm-%d" % i)
            i += 1
        writer.logout()

    t = threading.Thread(target=storm, daemon=True)
    t.start()
    try:
        late = []
        for i in range(20):
            s = xapid.login()
            w = Waiter(xapid, s.ref, ["vm/" + vm], token_now(s), 30)
            w.start()
            time.sleep(0.05 + 0.01 * (i % 5))
            t0 = time.monotonic()
            s.logout()
            w.join(3)
            if w.is_alive() or not isinstance(w.error, XapiError):
                late.append((i, w.result, w.error))
            elif w.error.details != ["SESSION_INVALID", s.ref] \
                    or w.t_done - t0 > 2.0:
                late.append((i, w.error.details, w.t_done - t0))
        assert not late, late
    finally:
        stop.set()
        t.join(10)
    session.VM.set_name_description(vm, "crowd-release")
    for w in crowd:
        w.join(10)
    assert all(w.result for w in crowd)
    session.VM.destroy(busy_vm)


def test_many_concurrent_waiters(xapid, session, vm):
    tok = token_now(session)
    waiters = [Waiter(xapid, session.ref, ["vm/" + vm], tok, 20)
               for _ in range(200)]
    for w in waiters:
        w.start()
    time.sleep(1.0)
    assert all(w.t_done is None for w in waiters)
    session.VM.set_name_description(vm, "for-200")
    t_ack = time.monotonic()
    for w in waiters:
        w.join(15)
    errors = [w.error for w in waiters if w.error]
    assert not errors, errors[:3]
    assert all(w.result and [e["ref"] for e in w.result["events"]] == [vm]
               for w in waiters)
    worst = max(w.t_done for w in waiters) - t_ack
    assert worst < 3.0, worst
    # the server still answers normally
    assert session.pool.get_all()


# ---- legacy API and inject ------------------------------------------------------------


def test_register_next_unregister(xapid, vm):
    s = xapid.login()
    e = expect_error(s.event.next)
    assert e.code == "SESSION_NOT_REGISTERED"
    s.event.register(["vm"])
    s.VM.set_name_description(vm, "legacy-1")
    evs = s.event.next()
    assert isinstance(evs, list) and evs
    mine = [e for e in evs if e["ref"] == vm]
    assert mine and mine[-1]["operation"] == "mod"
    assert mine[-1]["class"] == "vm"
    # next() blocks until something new happens
    res = {}
    api2 = xapid.api()
    t = threading.Thread(target=lambda: res.update(
        evs=api2.call("event.next", s.ref), t=time.monotonic()), daemon=True)
    t.start()
    time.sleep(0.3)
    assert "evs" not in res
    s.VM.set_name_description(vm, "legacy-2")
    t.join(5)
    assert any(e["ref"] == vm for e in res["evs"])
    s.event.unregister(["vm"])
    s.logout()


def test_inject_produces_mod(session, vm):
    tok = token_now(session)
    t = session.event.inject("VM", vm)
    assert TOKEN_RE.match(t), t
    assert t > tok
    r = ev_from(session, ["vm"], tok, 5)
    evs = [e for e in r["events"] if e["ref"] == vm]
    assert [e["operation"] for e in evs] == ["mod"]
    e = expect_error(session.event.inject, "VM", "OpaqueRef:nope")
    assert e.code == "HANDLE_INVALID"


def test_get_current_id(xapid, session, vm):
    a = int(session.event.get_current_id())
    session.VM.set_name_description(vm, "id-bump")
    b = int(session.event.get_current_id())
    assert b > a


def test_sigterm_with_parked_waiters(xapid_factory):
    """Parked event.from calls and a held-back failed login do not stop a
    clean shutdown: SIGTERM still exits 0 within 10 s."""
    x = xapid_factory.start()
    s = x.login()
    tok = token_now(s)
    waiters = [Waiter(x, s.ref, ["vm"], tok, 60) for _ in range(5)]
    for w in waiters:
        w.start()
    api = x.api()
    for _ in range(4):  # the 5th failure is held back ~1.6 s
        expect_error(api.call, "session.login_with_password", "root", "bad")
    def late_failure():
        try:
            x.api().call("session.login_with_password", "root", "bad")
        except Exception:  # noqa: BLE001 - failure or a closed connection
            pass

    late = threading.Thread(target=late_failure, daemon=True)
    late.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    x.stop_clean()
    assert time.monotonic() - t0 < 10
    for w in waiters:
        w.join(5)
        assert not w.is_alive()

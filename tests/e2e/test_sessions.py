"""Sessions, authentication, throttling of failed logins, limits, idle
expiry and RBAC (XENAPI.md section 2)."""

import statistics
import threading
import time

import pytest

import xapilib
from xapilib import XapiError, expect_error

RBAC_USERS = [
    ("ro", "read-only", "ro-pass"),
    ("vmop", "vm-operator", "vmop-pass"),
    ("vmadmin", "vm-admin", "vmadmin-pass"),
    ("vmpower", "vm-power-admin", "vmpower-pass"),
    ("padmin", "pool-admin", "padmin-pass"),
]


def timed(fn, *args):
    t0 = time.monotonic()
    try:
        r = fn(*args)
    except XapiError as e:
        r = e
    return r, time.monotonic() - t0


# ---- logging in and out ---------------------------------------------------


def test_login_variants_and_record(xapid):
    for extra in ([], ["1.1"], ["2.0", "e2e-test"]):
        s = xapid.api().login("root", xapid.password, *extra)
        rec = s.session.get_record(s.ref)
        assert rec["is_local_superuser"] is True
        assert rec["auth_user_name"] == "root"
        assert rec["pool"] is False
        if len(extra) == 2:
            assert rec["originator"] == "e2e-test"
        host = s.host.get_all()[0]
        assert rec["this_host"] == host
        assert s.session.get_this_host(s.ref) == host
        assert s.session.get_uuid(s.ref) == rec["uuid"]
        s.logout()


def test_logout_invalidates(xapid):
    s = xapid.login()
    other = xapid.login()
    s.logout()
    e = expect_error(s.pool.get_all)
    assert e.details == ["SESSION_INVALID", s.ref]
    # logging out twice is harmless for the caller's other sessions
    e = expect_error(s.logout)
    assert e.code == "SESSION_INVALID"
    assert other.pool.get_all()
    # the session row is gone
    e = expect_error(other.session.get_record, s.ref)
    assert e.details == ["HANDLE_INVALID", "session", s.ref]


def test_sessions_are_distinct(xapid):
    a, b = xapid.login(), xapid.login()
    assert a.ref != b.ref
    a.logout()
    assert b.pool.get_all()


# ---- failures and throttling ---------------------------------------------------


@pytest.fixture
def fresh(xapid_factory):
    """A server of our own: throttling state is per server."""
    return xapid_factory.start()


def test_wrong_password(fresh):
    api = fresh.api()
    e = expect_error(api.call, "session.login_with_password", "root", "nope")
    assert e.code == "SESSION_AUTHENTICATION_FAILED"
    assert len(e.params) == 2 and e.params[0] == "root"
    e = expect_error(api.call, "session.login_with_password", "mallory",
                     fresh.password)
    assert e.code == "SESSION_AUTHENTICATION_FAILED"
    assert e.params[0] == "mallory"
    # right after, the right password is let in at once
    s, dt = timed(api.login, "root", fresh.password)
    assert not isinstance(s, XapiError), s
    assert dt < 1.0, dt


def test_failures_are_delayed_increasingly(fresh):
    api = fresh.api()
    times = []
    for _ in range(6):
        e, dt = timed(api.call, "session.login_with_password", "root", "bad")
        assert isinstance(e, XapiError)
        assert e.code == "SESSION_AUTHENTICATION_FAILED"
        times.append(dt)
    # 100 ms doubling: a delay is never shorter than its step (a loaded
    # machine only adds to it, so only the lower bounds are tight)
    for i, dt in enumerate(times):
        assert 0.1 * 2 ** i * 0.95 <= dt < 0.1 * 2 ** i + 3.0, (i, times)
    # success is not delayed, and resets the count
    s, dt = timed(api.login, "root", fresh.password)
    assert not isinstance(s, XapiError) and dt < 1.0, dt
    e, dt = timed(api.call, "session.login_with_password", "root", "bad")
    assert dt < times[5] * 0.5, (dt, times)  # back to the first step


def test_delayed_failure_does_not_block_others(fresh):
    """While a failure is being held back, other calls are answered."""
    s = fresh.login()  # first: a success resets the failure count
    api = fresh.api()
    for _ in range(4):  # bring the delay up to ~0.8 s
        expect_error(api.call, "session.login_with_password", "root", "bad")
    done = {}

    def fail_again():
        done["r"] = timed(fresh.api().call, "session.login_with_password",
                          "root", "bad")

    t = threading.Thread(target=fail_again)
    t.start()
    time.sleep(0.1)
    lat = []
    for _ in range(5):
        _, dt = timed(s.pool.get_all)
        lat.append(dt)
    t.join()
    assert done["r"][1] >= 0.5, done
    assert statistics.median(lat) < 0.1, lat


# ---- limits ---------------------------------------------------------------------


def test_sessions_per_user_bound(xapid_factory):
    x = xapid_factory.start(extra_args=["--sessions-per-user", "3"])
    ss = [x.login() for _ in range(3)]
    for s in ss:
        assert s.pool.get_all()
    fourth = x.login()
    e = expect_error(ss[0].pool.get_all)
    assert e.details == ["SESSION_INVALID", ss[0].ref]
    for s in ss[1:] + [fourth]:
        assert s.pool.get_all()
    fifth = x.login()
    e = expect_error(ss[1].pool.get_all)
    assert e.details == ["SESSION_INVALID", ss[1].ref]
    for s in (ss[2], fourth, fifth):
        assert s.pool.get_all()


def test_idle_sessions_expire(xapid_factory):
    x = xapid_factory.start(extra_args=["--session-timeout", "1"])
    idle = x.login()
    busy = x.login()
    t_end = time.monotonic() + 2.2
    while time.monotonic() < t_end:
        assert busy.pool.get_all()  # activity keeps a session alive
        time.sleep(0.3)
    e = expect_error(idle.pool.get_all)
    assert e.details == ["SESSION_INVALID", idle.ref]
    assert busy.pool.get_all()
    # a new login works
    assert x.login().pool.get_all()


def test_expired_sessions_give_way_first(xapid_factory):
    """At the per-user bound, a session that expired (but was not swept
    yet) makes room before the oldest live one is evicted."""
    x = xapid_factory.start(extra_args=["--sessions-per-user", "2",
                                        "--session-timeout", "1"])
    busy = x.login()   # the oldest, kept alive
    idle = x.login()   # newer, left to expire
    t_end = time.monotonic() + 1.6
    while time.monotonic() < t_end:
        assert busy.pool.get_all()
        time.sleep(0.3)
    third = x.login()
    assert busy.pool.get_all()  # not evicted: the dead one went instead
    assert third.pool.get_all()
    e = expect_error(idle.pool.get_all)
    assert e.details == ["SESSION_INVALID", idle.ref]


# ---- RBAC -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rbac(xapid_module_factory):
    x = xapid_module_factory.start(accounts=RBAC_USERS)
    root = x.login()
    tmpl = root.VM.get_by_name_label("Other install media")[0]
    rec = root.VM.get_record(tmpl)
    rec.update(name_label="rbac-vm", is_a_template=False, other_config={})
    vm = root.VM.create(rec)
    users = {u: x.login(u, pw) for u, _, pw in RBAC_USERS}
    return x, root, vm, users


def assert_denied(fn, perm, *args):
    e = expect_error(fn, *args)
    assert e.code == "RBAC_PERMISSION_DENIED", e.details
    assert e.params[0] == perm
    assert e.params[1].startswith("No permission in user session. "
                                  "(Roles with this permission: ")
    return e


def test_rbac_accounts_log_in(rbac):
    x, root, vm, users = rbac
    for u, role, pw in RBAC_USERS:
        s = users[u]
        rec = s.session.get_record(s.ref)
        assert rec["auth_user_name"] == u
        assert rec["is_local_superuser"] is False
    e = expect_error(x.api().call, "session.login_with_password", "ro",
                     "vmop-pass")
    assert e.code == "SESSION_AUTHENTICATION_FAILED"


def test_read_only_reads_but_cannot_write(rbac):
    x, root, vm, users = rbac
    ro = users["ro"]
    assert vm in ro.VM.get_all()
    assert ro.VM.get_name_label(vm) == "rbac-vm"
    assert ro.call("event.from", ["vm"], "", 0.0)["events"]
    e = assert_denied(ro.VM.set_name_label, "vm.set_name_label", vm, "x")
    roles_text = e.params[1]
    for r in ("pool-admin", "pool-operator", "vm-power-admin", "vm-admin"):
        assert r in roles_text
    assert "read-only" not in roles_text and "vm-operator" not in roles_text
    assert_denied(ro.VM.add_tags, "vm.add_tags", vm, "t")
    assert_denied(ro.VM.create, "vm.create", {})
    assert root.VM.get_name_label(vm) == "rbac-vm"
    assert root.VM.get_tags(vm) == []


def test_vm_operator(rbac):
    x, root, vm, users = rbac
    op = users["vmop"]
    op.VM.add_tags(vm, "op-tag")  # tags are vm-operator's
    assert "op-tag" in root.VM.get_tags(vm)
    op.VM.remove_tags(vm, "op-tag")
    assert_denied(op.VM.set_name_label, "vm.set_name_label", vm, "x")
    # VM.start is vm-operator's: past RBAC (whatever the outcome), while
    # read-only is stopped at RBAC.
    try:
        op.VM.start(vm, False, False)
    except XapiError as e:
        assert e.code != "RBAC_PERMISSION_DENIED", e.details
    assert_denied(users["ro"].VM.start, "vm.start", vm, False, False)


def test_vm_admin_and_power_admin(rbac):
    x, root, vm, users = rbac
    va = users["vmadmin"]
    va.VM.set_name_label(vm, "renamed-by-vm-admin")
    assert root.VM.get_name_label(vm) == "renamed-by-vm-admin"
    va.VM.add_to_other_config(vm, "by", "vm-admin")
    # affinity needs vm-power-admin
    host = root.host.get_all()[0]
    assert_denied(va.VM.set_affinity, "vm.set_affinity", vm, host)
    users["vmpower"].VM.set_affinity(vm, host)
    assert root.VM.get_affinity(vm) == host
    # pool settings need pool-operator
    pool = root.pool.get_all()[0]
    assert_denied(users["vmpower"].pool.set_name_label, "pool.set_name_label",
                  pool, "x")
    users["padmin"].pool.set_name_description(pool, "by pool-admin")
    assert root.pool.get_name_description(pool) == "by pool-admin"
    # a VM admin may create and destroy VMs
    rec = root.VM.get_record(vm)
    rec.update(name_label="vm-admin-made", other_config={})
    made = va.VM.create(rec)
    va.VM.destroy(made)
    assert_denied(users["vmop"].VM.destroy, "vm.destroy", vm)


def test_rbac_on_async_and_map_keys(rbac):
    x, root, vm, users = rbac
    e = expect_error(users["ro"].call, "Async.VM.destroy", vm)
    assert e.code == "RBAC_PERMISSION_DENIED"
    assert e.params[0] in ("vm.destroy", "async.vm.destroy"), e.details
    assert vm in root.VM.get_all()


def test_accounts_persist_over_restart(rbac):
    x, root, vm, users = rbac
    x.restart()
    s = x.login("vmadmin", "vmadmin-pass")
    assert s.VM.get_all()
    assert_denied(x.login("ro", "ro-pass").VM.set_name_label,
                  "vm.set_name_label", vm, "y")
    # sessions do not survive a restart
    old = users["padmin"].ref
    e = expect_error(x.api().call, "pool.get_all", old)
    assert e.details == ["SESSION_INVALID", old]
    # and leave no row behind
    e = expect_error(s.session.get_record, old)
    assert e.details == ["HANDLE_INVALID", "session", old]


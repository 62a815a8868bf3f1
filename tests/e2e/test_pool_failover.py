"""Pools, continued: placement of running VMs, the write fence of
pool.designate_new_master, a member restarted while its master is down
(xapi's emergency mode), the old master's tasks at a takeover, and a
member losing its master mid-call."""

import threading
import time

import poollib
from poollib import wait_for
from test_pool import formed, host_by_address, small_vm
from xapilib import XapiError, expect_error

MIB = 1 << 20


def test_possible_hosts_include_where_a_running_vm_is(pool):
    # the member has room for one 1.2 GiB VM, not two
    master = pool.add(1)[0]
    member = pool.add(1, env={"XAPID_SIM_HOST_MEMORY_MB": "3072"})[0]
    poollib.join(member, master)
    api = master.login()
    mh = host_by_address(api, member.address)
    big = str(1200 * MIB)
    vm = small_vm(api, "big")
    api.VM.set_memory_limits(vm, big, big, big, big)
    api.VM.start_on(vm, mh, False, False)
    other = small_vm(api, "big-too")
    api.VM.set_memory_limits(other, big, big, big, big)
    e = expect_error(api.VM.assert_can_boot_here, other, mh)
    assert e.code == "HOST_NOT_ENOUGH_FREE_MEMORY"
    assert mh not in api.VM.get_possible_hosts(other)
    # xapi: the host a running VM is on can run it (its memory is its own)
    assert mh in api.VM.get_possible_hosts(vm)
    api.VM.assert_can_boot_here(vm, mh)
    api.VM.hard_shutdown(vm)


def test_designate_new_master_loses_no_acknowledged_write(pool):
    old, new, other = formed(pool, 3)
    api = old.login()
    vm = small_vm(api, "fenced")
    nh = host_by_address(api, new.address)
    acked, failures = [], []
    stop = threading.Event()

    def writer():
        target = old
        s = target.login()
        i = 0
        while not stop.is_set():
            key = "w%d" % i
            try:
                s.VM.add_to_other_config(vm, key, "x")
                acked.append(key)
                i += 1
            except XapiError as e:
                if e.code != "HOST_IS_SLAVE":
                    failures.append(e.details)
                    i += 1  # never reuse a key whose outcome is unknown
                target = new
                s = wait_for(target.login)
            time.sleep(0.002)

    t = threading.Thread(target=writer)
    t.start()
    wait_for(lambda: len(acked) >= 20)
    api.pool.designate_new_master(nh)
    time.sleep(0.5)  # writes continue on the new master
    stop.set()
    t.join(30)
    assert not failures, failures
    napi = new.login()
    assert napi.pool.get_master(napi.pool.get_all()[0]) == nh
    have = napi.VM.get_other_config(vm)
    lost = [k for k in acked if k not in have]
    print("%d writes acknowledged across the hand-over" % len(acked))
    assert not lost, lost
    for h in (old, other):
        wait_for(lambda: all(k in h.local_session().VM.get_other_config(vm)
                             for k in acked))


def test_member_restarted_while_master_is_down(pool):
    master, member = formed(pool, 2)
    api = master.login()
    vm = small_vm(api, "before")
    mh = host_by_address(api, member.address)
    metrics = api.host.get_metrics(mh)
    master.kill9()
    member.stop_clean()
    member.start()  # the master is away: emergency mode
    e = expect_error(member.login)
    assert e.details == ["HOST_IS_SLAVE", master.address]
    local = member.local_session()
    assert local.VM.get_name_label(vm) == "before"  # reads its replica
    e = expect_error(local.VM.set_name_label, vm, "refused")
    assert e.code == "HOST_IS_SLAVE"
    # the master returns: the member rejoins by itself
    master.start()
    api = master.login()
    wait_for(lambda: api.host_metrics.get_live(metrics) is True, timeout=15)
    api.VM.set_name_label(vm, "after")
    wait_for(lambda: member.local_session().VM.get_name_label(vm) == "after")
    # ... or, when it does not, the member takes over
    master.kill9()
    member.stop_clean()
    member.start()
    member.local_session().pool.emergency_transition_to_master()
    napi = member.login()
    assert napi.VM.get_name_label(vm) == "after"
    assert napi.pool.get_master(napi.pool.get_all()[0]) == mh


def test_takeover_forgets_the_old_masters_tasks(pool):
    """Tasks live in the master's memory and reach the members' replicas:
    a member taking over from a master that is gone drops the ones the
    old master ran (their work died with it), so that a client polling
    one learns it is gone instead of seeing it pending for ever."""
    master, member = formed(pool, 2)
    api = master.login()
    task = api.task.create("lost with the master", "")
    wait_for(lambda: task in member.local_session().task.get_all())
    master.kill9()
    member.local_session().pool.emergency_transition_to_master()
    napi = member.login()
    e = expect_error(napi.task.get_status, task)
    assert e.code == "HANDLE_INVALID", e.details
    # the new master's own tasks work as before
    task = napi.task.create("after", "")
    assert napi.task.get_status(task) == "pending"


def test_member_losing_master_mid_call(pool):
    master = pool.add(1)[0]
    member = pool.add(1, env={"XAPID_SIM_DELAY_MS": "create:1500"})[0]
    poollib.join(member, master)
    api = master.login()
    mh = host_by_address(api, member.address)
    metrics = api.host.get_metrics(mh)
    vm = small_vm(api, "orphan")
    outcome = []

    def start():
        try:
            master.login().VM.start_on(vm, mh, False, False)
            outcome.append("ok")
        except (XapiError, OSError) as e:  # the master dies under it
            outcome.append(e)

    t = threading.Thread(target=start)
    t.start()
    time.sleep(0.5)  # the member is creating the domain
    master.kill9()
    t.join(30)
    assert outcome and outcome[0] != "ok"
    # the member's write-back fails with a clear error, and it keeps
    # trying the master
    wait_for(lambda: "CANNOT_CONTACT_HOST" in member.stderr_text(50000)
             or "write to the master" in member.stderr_text(50000),
             timeout=15)
    master.start()
    api = master.login()
    wait_for(lambda: api.host_metrics.get_live(metrics) is True, timeout=15)
    # one database: every row once, the same on both hosts
    local = member.local_session()
    wait_for(lambda: sorted(local.VM.get_all()) == sorted(api.VM.get_all()))
    assert len(api.VM.get_by_name_label("orphan")) == 1
    assert api.VM.get_power_state(vm) in ("Halted", "Running")
    api.VM.set_name_label(vm, "reconnected")
    wait_for(lambda: local.VM.get_name_label(vm) == "reconnected")

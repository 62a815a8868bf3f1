"""Resource pools: join, HOST_IS_SLAVE, replication, forwarding of VM
operations to members, liveness, master changes, eject and certificate
pinning, with several real xapid processes on 127.0.0.2, .3, .4 over
TLS (see poollib)."""

import os
import statistics
import time

import poollib
from poollib import wait_for
from xapilib import expect_error

MIB = 1 << 20


def small_vm(api, name):
    """A diskless VM: it can boot on any host of the pool."""
    vm = api.VM.clone(api.VM.get_by_name_label("Debian Bookworm 12")[0], name)
    api.VM.set_is_a_template(vm, False)
    m = str(128 * MIB)
    api.VM.set_memory_limits(vm, m, m, m, m)
    return vm


def host_by_address(api, address):
    for h in api.host.get_all():
        if api.host.get_address(h) == address:
            return h
    raise AssertionError("no host at %s" % address)


def formed(pool, n):
    hosts = pool.add(n)
    master = hosts[0]
    for m in hosts[1:]:
        poollib.join(m, master)
    return hosts


def test_join_and_host_is_slave(pool):
    master, member = pool.add(2)
    t0 = time.monotonic()
    poollib.join(member, master)
    print("join took %.3f s" % (time.monotonic() - t0))
    api = master.login()
    assert len(api.host.get_all()) == 2
    mh = host_by_address(api, member.address)
    assert api.host.get_metrics(mh)
    assert api.host.get_control_domain(mh)
    assert api.pool.get_master(api.pool.get_all()[0]) == \
        host_by_address(api, master.address)
    e = expect_error(member.login)
    assert e.details == ["HOST_IS_SLAVE", master.address]
    # the replica is the master's database
    local = member.local_session()
    assert sorted(local.host.get_all()) == sorted(api.host.get_all())
    assert local.pool.get_all() == api.pool.get_all()
    # a write through a local session is refused on a member
    e = expect_error(local.VM.set_name_label, local.VM.get_all()[0], "x")
    assert e.code == "HOST_IS_SLAVE"
    # host-to-host messages are hidden
    methods = api.api.proxy.system.listMethods()
    assert "pool.db_write" not in methods and "pool.join" in methods


def test_join_brings_pif_networks(pool):
    """A joiner's PIFs end on networks the pool has: its physical
    networks are merged onto the pool's by bridge name."""
    master, member = pool.add(2)
    api = master.login()
    before = set(api.network.get_all())
    mine = {api.network.get_bridge(api.PIF.get_network(p))
            for p in api.PIF.get_all()}
    poollib.join(member, master)
    mh = host_by_address(api, member.address)
    pifs = [p for p in api.PIF.get_all() if api.PIF.get_host(p) == mh]
    assert pifs, "the member's PIFs were not merged"
    nets = set(api.network.get_all())
    for p in pifs:
        n = api.PIF.get_network(p)
        assert n in nets, ("PIF %s names a network the pool lacks" % p)
        assert p in api.network.get_PIFs(n)
        if api.network.get_bridge(n) in mine:
            assert n in before  # the pool's own network, not a copy
    # one network per bridge name
    bridges = [api.network.get_bridge(n) for n in nets]
    assert len(bridges) == len(set(bridges)), bridges


def test_join_refusals_leave_both_databases_untouched(pool):
    master, joiner, third = pool.add(3)
    s = joiner.login()
    e = expect_error(s.pool.join, master.address, "root", "wrong")
    assert e.code == "SESSION_AUTHENTICATION_FAILED"
    assert len(master.login().host.get_all()) == 1
    assert len(s.host.get_all()) == 1
    # a running VM on the joiner
    vm = small_vm(s, "busy")
    s.VM.start(vm, False, False)
    e = expect_error(s.pool.join, master.address, "root", master.password)
    assert e.code == "JOINING_HOST_CANNOT_HAVE_RUNNING_OR_SUSPENDED_VMS"
    s.VM.hard_shutdown(vm)
    # to a member rather than the master
    poollib.join(third, master)
    e = expect_error(s.pool.join, third.address, "root", third.password)
    assert e.details == ["HOST_IS_SLAVE", master.address]
    assert len(s.host.get_all()) == 1
    assert len(master.login().host.get_all()) == 2


def test_replication_lag_under_write_load(pool):
    master, m1, m2 = formed(pool, 3)
    api = master.login()
    vm = small_vm(api, "lag")
    replicas = [m1.local_session(), m2.local_session()]
    lags = []
    for i in range(40):
        label = "lag-%d" % i
        t0 = time.monotonic()
        api.VM.set_name_label(vm, label)
        for r in replicas:
            wait_for(lambda: r.VM.get_name_label(vm) == label,
                     timeout=5, interval=0.001)
        lags.append(time.monotonic() - t0)
    print("replication lag: median %.1f ms, max %.1f ms"
          % (statistics.median(lags) * 1e3, max(lags) * 1e3))
    # sanitizer builds run several times slower; a loaded machine (two
    # cores shared with other tests) stretches single samples, so the
    # median carries the figure and the worst only bounds a stall
    slow = 3 if os.environ.get("XA_SANITIZE") else 1
    assert statistics.median(lags) < 0.05 * slow, lags
    assert max(lags) < 1.0 * slow, lags


def test_vm_start_on_members(pool):
    master, member = formed(pool, 2)
    api = master.login()
    mh = host_by_address(api, member.address)
    vm = small_vm(api, "on-member")
    api.VM.start_on(vm, mh, False, False)
    assert api.VM.get_power_state(vm) == "Running"
    assert api.VM.get_resident_on(vm) == mh
    api.VM.clean_shutdown(vm)
    assert api.VM.get_power_state(vm) == "Halted"
    # placement honours affinity
    api.VM.set_affinity(vm, mh)
    api.VM.start(vm, False, False)
    assert api.VM.get_resident_on(vm) == mh
    api.VM.hard_shutdown(vm)
    assert sorted(api.VM.get_possible_hosts(vm)) == sorted(api.host.get_all())
    api.VM.assert_can_boot_here(vm, mh)


def test_liveness_and_power_state_reset(pool):
    master, member = formed(pool, 2)
    api = master.login()
    mh = host_by_address(api, member.address)
    metrics = api.host.get_metrics(mh)
    vm = small_vm(api, "stranded")
    api.VM.start_on(vm, mh, False, False)
    member.kill9()
    wait_for(lambda: api.host_metrics.get_live(metrics) is False, timeout=10)
    assert api.VM.get_power_state(vm) == "Running"  # as recorded
    api.VM.power_state_reset(vm)
    assert api.VM.get_power_state(vm) == "Halted"
    member.start()
    wait_for(lambda: api.host_metrics.get_live(metrics) is True, timeout=10)


def test_designate_new_master(pool):
    old, new, other = formed(pool, 3)
    api = old.login()
    vm = small_vm(api, "before-handover")
    nh = host_by_address(api, new.address)
    api.pool.designate_new_master(nh)
    e = wait_for(lambda: expect_error(old.login))
    assert e.details == ["HOST_IS_SLAVE", new.address]
    napi = new.login()
    assert napi.VM.get_name_label(vm) == "before-handover"
    assert napi.pool.get_master(napi.pool.get_all()[0]) == nh
    napi.VM.set_name_label(vm, "after-handover")
    for h in (old, other):
        wait_for(lambda: h.local_session().VM.get_name_label(vm)
                 == "after-handover")


def test_emergency_transition_after_kill9_and_recover_slaves(pool):
    master, m1, m2 = formed(pool, 3)
    api = master.login()
    vm = small_vm(api, "acked")
    api.VM.set_name_label(vm, "last-acknowledged")
    master.kill9()
    s = m1.local_session()
    s.pool.emergency_transition_to_master()
    napi = m1.login()
    assert napi.VM.get_name_label(vm) == "last-acknowledged"
    recovered = napi.pool.recover_slaves()
    assert recovered == [host_by_address(napi, m2.address)]
    e = wait_for(lambda: expect_error(m2.login))
    assert e.details == ["HOST_IS_SLAVE", m1.address]
    napi.VM.set_name_label(vm, "new-era")
    wait_for(lambda: m2.local_session().VM.get_name_label(vm) == "new-era")


def test_eject(pool):
    master, member = formed(pool, 2)
    api = master.login()
    mh = host_by_address(api, member.address)
    api.pool.eject(mh)
    assert len(api.host.get_all()) == 1
    # the member restarts itself (same process id) as a fresh host
    time.sleep(0.5)
    member.wait_answering()
    s = wait_for(member.login)
    assert len(s.host.get_all()) == 1
    assert s.host.get_all()[0] != mh


def test_unpinned_certificate_is_refused(pool):
    master, member = formed(pool, 2)
    api = master.login()
    mh = host_by_address(api, member.address)
    metrics = api.host.get_metrics(mh)
    # the master comes back with a certificate nobody pinned
    master.stop_clean()
    for f in ("xapi-ssl.pem", "xapi-ssl.key"):
        os.unlink(os.path.join(master.state_dir, f))
    master.start()
    api = master.login()
    # the member will not talk to it: it is never heard from again
    wait_for(lambda: api.host_metrics.get_live(metrics) is False, timeout=10)
    api.VM.set_name_label(small_vm(api, "unseen"), "unseen")
    time.sleep(0.5)
    assert member.local_session().VM.get_by_name_label("unseen") == []
    assert "not pinned" in member.stderr_text(20000)

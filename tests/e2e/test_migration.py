"""Live migration inside a pool of real xapid hosts on the simulated
hypervisor: VM.pool_migrate, VM.assert_can_migrate, host.evacuate and
their refusals, and what a failure leaves behind."""

import http.client
import time
import xmlrpc.client

import migratelib
import poollib
from migratelib import host_ref
from poollib import wait_for
from xapilib import expect_error

MIB = 1 << 20


def sim_env(env=None, memory_mb=16384):
    """A simulated host's environment: 'memory_mb' of memory, and 'env'."""
    return dict({"XAPID_SIM_HOST_MEMORY_MB": str(memory_mb)}, **(env or {}))


def add_host(pool, env=None, memory_mb=16384):
    """One more host, with simulator knobs of its own."""
    return migratelib.add_host(pool, sim_env(env, memory_mb))


def formed(pool, specs):
    """A pool of one host per spec (add_host's arguments but the pool)."""
    return migratelib.formed(pool, [sim_env(**s) for s in specs])


def small_vm(api, name, mib=128):
    vm = api.VM.clone(api.VM.get_by_name_label("Debian Bookworm 12")[0], name)
    api.VM.set_is_a_template(vm, False)
    m = str(mib * MIB)
    api.VM.set_memory_limits(vm, m, m, m, m)
    return vm


def free_mem(api, host):
    return int(api.host_metrics.get_memory_free(api.host.get_metrics(host)))


def where(api, refs, vm):
    """The hosts whose resident_VMs list the VM: exactly one, or none."""
    return [h for h in refs if vm in api.host.get_resident_VMs(h)]


def test_pool_migrate_round_trip(pool):
    hosts, api, (a, b, c) = formed(pool, [{}, {}, {}])
    vm = small_vm(api, "mover")
    api.VM.start_on(vm, a, False, False)
    dom_a = api.VM.get_domid(vm)
    free_b = free_mem(api, b)
    assert "pool_migrate" in api.VM.get_allowed_operations(vm)
    api.VM.assert_can_migrate(vm, {"host": b}, True, {}, {}, {})
    t0 = time.monotonic()
    api.VM.pool_migrate(vm, b, {"live": "true"})
    print("pool_migrate master->member: %.1f ms"
          % ((time.monotonic() - t0) * 1e3))
    assert api.VM.get_resident_on(vm) == b
    assert api.VM.get_power_state(vm) == "Running"
    assert where(api, [a, b, c], vm) == [b]
    oc = api.VM.get_other_config(vm)
    for k in ("last_migration_downtime_ms", "last_migration_total_ms",
              "last_migration_bytes", "last_migration_rounds"):
        assert int(oc[k]) >= 0, k
    assert int(oc["last_migration_bytes"]) >= 128 * MIB
    print("modelled: total %s ms, downtime %s ms, %s bytes, %s rounds"
          % (oc["last_migration_total_ms"], oc["last_migration_downtime_ms"],
             oc["last_migration_bytes"], oc["last_migration_rounds"]))
    # the destination's memory accounting follows
    wait_for(lambda: free_mem(api, b) <= free_b - 128 * MIB)
    # the member's own replica agrees
    local_b = hosts[1].local_session()
    wait_for(lambda: local_b.VM.get_resident_on(vm) == b)
    # member to member, as a task
    task = api.Async.VM.pool_migrate(vm, c, {})
    wait_for(lambda: api.task.get_status(task) != "pending", timeout=30)
    assert api.task.get_status(task) == "success", \
        api.task.get_error_info(task)
    assert api.VM.get_resident_on(vm) == c
    assert where(api, [a, b, c], vm) == [c]
    assert not api.VM.get_current_operations(vm)
    # the master's task has the figures the member recorded
    toc = api.task.get_other_config(task)
    assert int(toc["migration_bytes"]) >= 128 * MIB, toc
    assert int(toc["migration_total_ms"]) >= 0, toc
    # back home
    api.VM.pool_migrate(vm, a, {})
    assert api.VM.get_resident_on(vm) == a
    # a task the source runs itself records the figures too
    task = api.Async.VM.pool_migrate(vm, b, {})
    wait_for(lambda: api.task.get_status(task) != "pending", timeout=30)
    assert api.task.get_status(task) == "success", \
        api.task.get_error_info(task)
    toc = api.task.get_other_config(task)
    assert int(toc["migration_bytes"]) >= 128 * MIB, toc
    for k in ("migration_downtime_ms", "migration_total_ms",
              "migration_rounds", "migration_switch_ms"):
        assert int(toc[k]) >= 0, (k, toc)
    api.VM.pool_migrate(vm, a, {})
    wait_for(lambda: free_mem(api, b) >= free_b - MIB)
    # localhost migration: allowed, the VM stays
    api.VM.pool_migrate(vm, a, {})
    assert api.VM.get_resident_on(vm) == a
    assert api.VM.get_power_state(vm) == "Running"
    # a clean shutdown reaches the VM where it now runs
    api.VM.pool_migrate(vm, c, {})
    api.VM.clean_shutdown(vm)
    assert api.VM.get_power_state(vm) == "Halted"


def test_pool_migrate_refusals(pool):
    hosts, api, (a, b) = formed(pool, [{}, {"memory_mb": 2048}])
    vm = small_vm(api, "checked")
    e = expect_error(api.VM.pool_migrate, vm, b, {})
    assert e.details == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    e = expect_error(api.VM.assert_can_migrate, vm, {"host": b}, True, {},
                     {}, {})
    assert e.code == "VM_BAD_POWER_STATE"
    # a big VM does not fit the small host
    big = small_vm(api, "big", mib=4096)
    api.VM.start_on(big, a, False, False)
    e = expect_error(api.VM.pool_migrate, big, b, {})
    assert e.code == "HOST_NOT_ENOUGH_FREE_MEMORY"
    assert api.VM.get_resident_on(big) == a
    api.VM.start_on(vm, a, False, False)
    # a disk on the master's local SR: the member cannot see it
    sr = api.PBD.get_SR([p for p in api.PBD.get_all()
                         if api.PBD.get_host(p) == a][0])
    vdi = api.VDI.create({"SR": sr, "virtual_size": str(MIB),
                          "name_label": "local disk", "type": "user",
                          "sharable": False, "read_only": False,
                          "other_config": {}})
    disky = small_vm(api, "disky")
    api.VBD.create({"VM": disky, "VDI": vdi, "userdevice": "0",
                    "bootable": True, "mode": "RW", "type": "Disk",
                    "empty": False, "other_config": {},
                    "qos_algorithm_type": "", "qos_algorithm_params": {}})
    api.VM.start_on(disky, a, False, False)
    e = expect_error(api.VM.pool_migrate, disky, b, {})
    assert e.details == ["VM_REQUIRES_SR", disky, sr]
    refusals = api.host.get_vms_which_prevent_evacuation(a)
    assert refusals[disky][0] == "VM_REQUIRES_SR"
    assert refusals[big][0] == "HOST_NOT_ENOUGH_FREE_MEMORY"
    assert vm not in refusals
    e = expect_error(api.host.assert_can_evacuate, a)
    assert e.code in ("VM_REQUIRES_SR", "HOST_NOT_ENOUGH_FREE_MEMORY")
    e = expect_error(api.host.evacuate, a)
    assert api.VM.get_resident_on(vm) == a  # nothing moved
    # a paused VM cannot move
    api.VM.pause(vm)
    e = expect_error(api.VM.pool_migrate, vm, b, {})
    assert e.code == "VM_BAD_POWER_STATE"
    # a template
    e = expect_error(api.VM.pool_migrate,
                     api.VM.get_by_name_label("Debian Bookworm 12")[0], b, {})
    assert e.code in ("VM_IS_TEMPLATE", "VM_BAD_POWER_STATE")
    # a destination that stopped answering
    api.VM.unpause(vm)
    hosts[1].kill9()
    wait_for(lambda: not api.host_metrics.get_live(api.host.get_metrics(b)))
    e = expect_error(api.VM.pool_migrate, vm, b, {})
    assert e.details == ["HOST_NOT_LIVE"]
    assert api.host.get_vms_which_prevent_evacuation(a)[vm] == \
        ["HOST_NOT_LIVE"]


def test_cpu_features_level_the_pool(pool):
    """A VM remembers the pool's CPU features at boot
    (last_boot_CPU_flags) and may only move where they all exist; the
    pool's features shrink to what every host has when a host with fewer
    joins, so VMs booted afterwards can go anywhere."""
    a_host = add_host(pool)
    api = a_host.login()
    a = host_ref(api, a_host.address)
    full = api.host.get_cpu_info(a)["features_pv"]
    words = full.split("-")
    # the member lacks one feature the master has
    bit = next((w, 1 << k) for w in range(len(words)) for k in range(32)
               if int(words[w], 16) >> k & 1)
    fewer = list(words)
    fewer[bit[0]] = "%08x" % (int(words[bit[0]], 16) & ~bit[1])
    early = small_vm(api, "booted-alone")
    api.VM.start_on(early, a, False, False)
    flags = api.VM.get_last_boot_CPU_flags(early)
    assert flags == {"vendor": api.host.get_cpu_info(a)["vendor"],
                     "features": full}, flags
    b_host = add_host(pool, env={"XAPID_CPU_FEATURES": "-".join(fewer)})
    poollib.join(b_host, a_host)
    b = host_ref(api, b_host.address)
    wait_for(lambda: api.host_metrics.get_live(api.host.get_metrics(b)))
    pool_ref = api.pool.get_all()[0]
    assert api.pool.get_cpu_info(pool_ref)["features_pv"] == "-".join(fewer)
    why = "VM last booted on a CPU with features this host's CPU does " \
          "not have."
    e = expect_error(api.VM.assert_can_migrate, early, {"host": b}, True,
                     {}, {}, {})
    assert e.details == ["VM_INCOMPATIBLE_WITH_THIS_HOST", early, b, why]
    e = expect_error(api.VM.pool_migrate, early, b, {"live": "true"})
    assert e.details == ["VM_INCOMPATIBLE_WITH_THIS_HOST", early, b, why]
    assert api.VM.get_resident_on(early) == a
    assert api.VM.get_power_state(early) == "Running"
    # booted after the join: the pool's (smaller) set, free to move
    late = small_vm(api, "booted-in-pool")
    api.VM.start_on(late, a, False, False)
    assert api.VM.get_last_boot_CPU_flags(late)["features"] == \
        "-".join(fewer)
    api.VM.pool_migrate(late, b, {"live": "true"})
    assert api.VM.get_resident_on(late) == b
    # and back to the host with more
    api.VM.pool_migrate(late, a, {"live": "true"})
    assert api.VM.get_resident_on(late) == a
    # a halted VM boots afresh wherever it goes: not checked
    api.VM.hard_shutdown(early)
    for vm in (early, late):
        if api.VM.get_power_state(vm) != "Halted":
            api.VM.hard_shutdown(vm)


FIGURES = ("migration_downtime_ms", "migration_total_ms", "migration_bytes",
           "migration_rounds", "migration_switch_ms")


def test_forwarded_task_is_updated_by_the_member(pool):
    """An Async migration of a VM on a member runs there for the master's
    task: the member moves its progress while it works (the send takes
    2 s) and records the figures on it, as the master does for its own."""
    hosts, api, (a, b, c) = formed(pool, [
        {}, {"env": {"XAPID_SIM_DELAY_MS": "migrate_send:2000"}}, {}])
    vm = small_vm(api, "watched")
    api.VM.start_on(vm, b, False, False)
    task = api.Async.VM.pool_migrate(vm, c, {})
    progress, op_keys = migratelib.watch_task(api, task, vm, timeout=30)
    assert api.task.get_status(task) == "success", \
        api.task.get_error_info(task)
    print("progress sampled: %s" % sorted(progress))
    # sampled while the send ran: neither the start nor the end
    assert any(0 < p < 1 for p in progress), sorted(progress)
    assert api.task.get_progress(task) == 1.0
    # the member's operation on the VM is the task's, as in xapi
    assert op_keys == {task}, op_keys
    assert api.VM.get_resident_on(vm) == c
    assert not api.VM.get_current_operations(vm)
    toc = api.task.get_other_config(task)
    for k in FIGURES:
        assert int(toc[k]) >= 0, (k, toc)
    assert int(toc["migration_bytes"]) >= 128 * MIB, toc
    # the figures are the ones the member recorded on the VM
    oc = api.VM.get_other_config(vm)
    assert toc["migration_bytes"] == oc["last_migration_bytes"], (toc, oc)


def forwarded_task_header(api, host, task, method, *params):
    """'method' called on 'host' by an ordinary client whose request names
    'task' in the header a master's forwarded calls carry."""
    body = xmlrpc.client.dumps((api.ref,) + params, method,
                               allow_none=True).encode()
    c = http.client.HTTPConnection(host.address, host.port, timeout=60)
    try:
        c.request("POST", "/", body=body,
                  headers={"Content-Type": "text/xml",
                           "X-Xapid-Forwarded-Task": task})
        r = c.getresponse()
        assert r.status == 200
        (reply,), _ = xmlrpc.client.loads(r.read())
    finally:
        c.close()
    assert reply["Status"] == "Success", reply
    return reply["Value"]


def test_forwarded_task_header_is_only_for_hosts(pool):
    """The header naming a forwarded call's task counts only on a
    host-to-host session: a client's call carrying it updates no task."""
    hosts, api, (a, b) = formed(pool, [{}, {}])
    vm = small_vm(api, "plain")
    api.VM.start_on(vm, a, False, False)
    task = api.task.create("bystander", "")
    # run by the master itself, and forwarded to the member
    forwarded_task_header(api, hosts[0], task, "VM.pool_migrate", vm, b, {})
    assert api.VM.get_resident_on(vm) == b
    forwarded_task_header(api, hosts[0], task, "VM.pool_migrate", vm, a, {})
    assert api.VM.get_resident_on(vm) == a
    assert api.task.get_progress(task) == 0.0
    assert api.task.get_other_config(task) == {}
    assert api.task.get_status(task) == "pending"


def test_failures_leave_the_vm_on_the_source(pool):
    hosts, api, (a, b) = formed(pool, [
        {"env": {"XAPID_SIM_FAULTS": "migrate_send:1",
                 "XAPID_SIM_DELAY_MS": "migrate_send:1500"}},
        {"env": {"XAPID_SIM_FAULTS": "migrate_receive:1"}}])
    vm = small_vm(api, "unlucky")
    api.VM.start_on(vm, a, False, False)
    dom = api.VM.get_domid(vm)
    free_b = free_mem(api, b)
    # the destination cannot build the domain
    e = expect_error(api.VM.pool_migrate, vm, b, {})
    assert e.code == "INTERNAL_ERROR", e.details
    assert api.VM.get_resident_on(vm) == a
    assert api.VM.get_power_state(vm) == "Running"
    assert api.VM.get_domid(vm) == dom
    assert not api.VM.get_current_operations(vm)
    # a slow send: a second operation meanwhile is refused
    task = api.Async.VM.pool_migrate(vm, b, {})
    wait_for(lambda: api.VM.get_current_operations(vm))
    e = expect_error(api.VM.pool_migrate, vm, b, {})
    assert e.code == "OTHER_OPERATION_IN_PROGRESS"
    wait_for(lambda: api.task.get_status(task) != "pending", timeout=30)
    # ... and that send fails (its first call): the source keeps it
    assert api.task.get_status(task) == "failure"
    info = api.task.get_error_info(task)
    assert info[:4] == ["VM_MIGRATE_FAILED", vm, a, b], info
    assert api.VM.get_resident_on(vm) == a
    assert api.VM.get_power_state(vm) == "Running"
    assert api.VM.get_domid(vm) == dom
    assert where(api, [a, b], vm) == [a]
    # the destination destroyed what it had built
    wait_for(lambda: free_mem(api, b) == free_b)
    # the third time works
    api.VM.pool_migrate(vm, b, {})
    assert api.VM.get_resident_on(vm) == b


def test_evacuate_ten(pool):
    hosts, api, (a, b, c) = formed(pool, [{}, {}, {}])
    vms = [small_vm(api, "evac-%d" % i) for i in range(10)]
    for vm in vms:
        api.VM.start_on(vm, a, False, False)
    assert api.host.get_vms_which_prevent_evacuation(a) == {}
    api.host.assert_can_evacuate(a)
    t0 = time.monotonic()
    api.host.evacuate(a)
    print("evacuate 10 VMs: %.1f ms" % ((time.monotonic() - t0) * 1e3))
    for vm in vms:
        assert api.VM.get_resident_on(vm) in (b, c)
        assert api.VM.get_power_state(vm) == "Running"
        assert len(where(api, [a, b, c], vm)) == 1
    on = [api.VM.get_resident_on(vm) for vm in vms]
    assert on.count(b) >= 3 and on.count(c) >= 3  # spread by free memory
    # evacuating a member runs its migrations there
    task = api.Async.host.evacuate(b)
    wait_for(lambda: api.task.get_status(task) != "pending", timeout=60)
    assert api.task.get_status(task) == "success", \
        api.task.get_error_info(task)
    for vm in vms:
        assert api.VM.get_resident_on(vm) in (a, c)

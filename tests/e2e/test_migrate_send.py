"""Storage motion on the simulated hypervisor: host.migrate_receive,
VM.assert_can_migrate / assert_can_migrate_sender with a vdi_map and
VM.migrate_send moving a VM's disk between the local SRs of two pool
hosts (running and halted), byte for byte, and what a failure leaves."""

import os
import subprocess
import tempfile
import time

import xapilib
from migratelib import (add_host, content, disk_with, formed, gone,
                        http_call, local_sr, pattern, the_disk, watch_task)
from poollib import wait_for
from xapilib import expect_error

MIB = 1 << 20


def vm_with_disk(api, name, vdi):
    vm = api.VM.clone(api.VM.get_by_name_label("Debian Bookworm 12")[0], name)
    api.VM.set_is_a_template(vm, False)
    m = str(128 * MIB)
    api.VM.set_memory_limits(vm, m, m, m, m)
    for vbd in api.VM.get_VBDs(vm):
        api.VBD.destroy(vbd)
    api.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0",
                    "bootable": True, "mode": "RW", "type": "Disk",
                    "empty": False, "other_config": {},
                    "qos_algorithm_type": "", "qos_algorithm_params": {}})
    return vm


def test_migrate_receive_and_refusals(pool):
    hosts, api, (a, b) = formed(pool, [{}, {}])
    net = api.network.get_all()[0]
    dest = api.host.migrate_receive(b, net, {})
    for k in ("SM", "xenops", "host", "session_id", "master"):
        assert k in dest, k
    assert dest["host"] == b
    assert dest["master"].startswith("https://%s:" % hosts[0].address)
    assert "/services/xenops?session_id=" in dest["xenops"]
    e = expect_error(api.host.migrate_receive, "OpaqueRef:nope", net, {})
    assert e.details == ["HANDLE_INVALID", "host", "OpaqueRef:nope"]
    # host.migrate_in (another pool's host streaming a VM in) takes a
    # session that migrate_receive handed out, and only while it lives
    other = hosts[0].login()
    some = api.VM.get_all()[0]
    r = other.raw("host.migrate_in", b, some, "no-such-phase")
    assert r["ErrorDescription"][0] == "RBAC_PERMISSION_DENIED", r
    other.host.migrate_receive(b, net, {})
    r = other.raw("host.migrate_in", b, some, "no-such-phase")
    assert r["ErrorDescription"] == ["INVALID_VALUE", "phase",
                                     "no-such-phase"], r
    other.logout()
    r = other.raw("host.migrate_in", b, some, "no-such-phase")
    assert r["ErrorDescription"][0] == "SESSION_INVALID", r

    sr_a, sr_b = local_sr(api, a), local_sr(api, b)
    vdi = disk_with(api, hosts[0], sr_a, pattern(MIB, 1))
    vm = vm_with_disk(api, "checked", vdi)
    # halted, no vdi_map: nothing could move (as pool_migrate)
    e = expect_error(api.VM.assert_can_migrate, vm, dest, True, {}, {}, {})
    assert e.code == "VM_BAD_POWER_STATE"
    api.VM.start_on(vm, a, False, False)
    # the disk stays on a's local SR: b cannot see it
    e = expect_error(api.VM.assert_can_migrate, vm, dest, True, {}, {}, {})
    assert e.details == ["VM_REQUIRES_SR", vm, sr_a]
    e = expect_error(api.VM.migrate_send, vm, dest, True, {}, {}, {})
    assert e.details == ["VM_REQUIRES_SR", vm, sr_a]
    # mapped onto a's SR again: same
    e = expect_error(api.VM.assert_can_migrate, vm, dest, True,
                     {vdi: sr_a}, {}, {})
    assert e.details == ["VM_REQUIRES_SR", vm, sr_a]
    # bad references in the maps
    e = expect_error(api.VM.assert_can_migrate, vm, dest, True,
                     {vdi: "OpaqueRef:nosr"}, {}, {})
    assert e.details == ["HANDLE_INVALID", "SR", "OpaqueRef:nosr"]
    e = expect_error(api.VM.assert_can_migrate, vm, dest, True,
                     {"OpaqueRef:novdi": sr_b}, {}, {})
    assert e.details == ["HANDLE_INVALID", "VDI", "OpaqueRef:novdi"]
    e = expect_error(api.VM.migrate_send, vm, dest, True, {vdi: sr_b},
                     {"OpaqueRef:novif": net}, {})
    assert e.details == ["HANDLE_INVALID", "VIF", "OpaqueRef:novif"]
    # a dest map without a host
    e = expect_error(api.VM.migrate_send, vm, {}, True, {vdi: sr_b}, {}, {})
    assert e.code == "INVALID_VALUE"
    # the good map passes every check, on the master and on the sender
    api.VM.assert_can_migrate(vm, dest, True, {vdi: sr_b}, {}, {})
    api.VM.assert_can_migrate_sender(vm, dest, True, {vdi: sr_b}, {}, {},
                                     {})
    # nothing moved meanwhile
    assert api.VM.get_resident_on(vm) == a
    assert the_disk(api, vm) == vdi
    tmpl = api.VM.get_by_name_label("Debian Bookworm 12")[0]
    e = expect_error(api.VM.migrate_send, tmpl, dest, True, {vdi: sr_b}, {},
                     {})
    assert e.code == "VM_IS_TEMPLATE"
    api.VM.hard_shutdown(vm)


def test_storage_motion_running_and_back(pool):
    hosts, api, (a, b) = formed(pool, [{}, {}])
    sr_a, sr_b = local_sr(api, a), local_sr(api, b)
    data = pattern(8 * MIB, 2)
    vdi = disk_with(api, hosts[0], sr_a, data)
    vm = vm_with_disk(api, "mover", vdi)
    api.VM.start_on(vm, a, False, False)
    net = api.network.get_all()[0]
    t0 = time.monotonic()
    task = api.Async.VM.migrate_send(vm, api.host.migrate_receive(b, net, {}),
                                     True, {vdi: sr_b}, {}, {})
    wait_for(lambda: api.task.get_status(task) != "pending", timeout=60)
    assert api.task.get_status(task) == "success", \
        api.task.get_error_info(task)
    print("sim storage motion a->b, 8 MiB: %.0f ms"
          % ((time.monotonic() - t0) * 1e3))
    assert api.VM.get_resident_on(vm) == b
    assert api.VM.get_power_state(vm) == "Running"
    new = the_disk(api, vm)
    assert new != vdi
    assert api.VDI.get_SR(new) == sr_b
    assert gone(api, vdi)
    assert int(api.VDI.get_virtual_size(new)) == len(data)
    assert content(hosts[1], api, new) == data
    assert not api.VM.get_current_operations(vm)
    # and back, to the master's SR
    api.VM.migrate_send(vm, api.host.migrate_receive(a, net, {}), True,
                        {new: sr_a}, {}, {})
    assert api.VM.get_resident_on(vm) == a
    back = the_disk(api, vm)
    assert api.VDI.get_SR(back) == sr_a and gone(api, new)
    assert content(hosts[0], api, back) == data
    api.VM.hard_shutdown(vm)


def test_storage_motion_halted(pool):
    hosts, api, (a, b) = formed(pool, [{}, {}])
    sr_a, sr_b = local_sr(api, a), local_sr(api, b)
    data = pattern(4 * MIB, 3)
    vdi = disk_with(api, hosts[0], sr_a, data)
    vm = vm_with_disk(api, "parked", vdi)
    net = api.network.get_all()[0]
    dest = api.host.migrate_receive(b, net, {})
    assert api.VM.migrate_send(vm, dest, False, {vdi: sr_b}, {}, {}) == vm
    assert api.VM.get_power_state(vm) == "Halted"
    new = the_disk(api, vm)
    assert api.VDI.get_SR(new) == sr_b and gone(api, vdi)
    assert content(hosts[1], api, new) == data
    # from the member's SR back to the master's: the member sends it
    api.VM.migrate_send(vm, api.host.migrate_receive(a, net, {}), False,
                        {new: sr_a}, {}, {})
    back = the_disk(api, vm)
    assert api.VDI.get_SR(back) == sr_a and gone(api, new)
    assert content(hosts[0], api, back) == data


def test_member_sr_work_runs_on_the_member(pool):
    """VDI.create, SR.scan/update, VDI.update and VDI.destroy on a
    member's local SR, called on the master, run on the member (the master
    has no PBD for it)."""
    hosts, api, (a, b) = formed(pool, [{}, {}])
    sr_b = local_sr(api, b)
    vdi = api.VDI.create({"SR": sr_b, "virtual_size": str(MIB),
                          "name_label": "on b", "type": "user",
                          "sharable": False, "read_only": False,
                          "other_config": {}})
    assert api.VDI.get_SR(vdi) == sr_b
    assert content(hosts[1], api, vdi) == bytes(MIB)  # b's SR holds it
    api.SR.scan(sr_b)
    api.SR.update(sr_b)
    api.VDI.update(vdi)
    assert vdi in api.SR.get_VDIs(sr_b)
    api.VDI.destroy(vdi)
    assert gone(api, vdi)


def parked_on_b(api, hosts, a, b, data, name):
    """A halted VM whose one disk, holding 'data', was made on a's local SR
    and moved to b's: (vm, its disk, a's SR, b's SR)."""
    sr_a, sr_b = local_sr(api, a), local_sr(api, b)
    vdi = disk_with(api, hosts[0], sr_a, data)
    vm = vm_with_disk(api, name, vdi)
    net = api.network.get_all()[0]
    api.VM.migrate_send(vm, api.host.migrate_receive(b, net, {}), False,
                        {vdi: sr_b}, {}, {})
    return vm, the_disk(api, vm), sr_a, sr_b


def test_vm_on_member_storage_is_cloned_there(pool):
    """VM.clone/snapshot/copy, VM.revert and VDI.copy of a halted VM whose
    disk is on a member's local SR run on that member, as xapi sends them
    to a host that sees the VM's storage."""
    hosts, api, (a, b) = formed(pool, [{}, {}])
    data = pattern(2 * MIB, 9)
    vm, on_b, sr_a, sr_b = parked_on_b(api, hosts, a, b, data, "kept-on-b")
    copies = [api.VM.clone(vm, "clone"), api.VM.snapshot(vm, "snap", []),
              api.VM.copy(vm, "copy", sr_b)]
    for c in copies:
        d = the_disk(api, c)
        assert d != on_b and api.VDI.get_SR(d) == sr_b
        assert content(hosts[1], api, d) == data
    lone = api.VDI.copy(on_b, sr_b, "OpaqueRef:NULL", "OpaqueRef:NULL")
    assert api.VDI.get_SR(lone) == sr_b
    assert content(hosts[1], api, lone) == data
    api.VM.revert(copies[1])
    assert content(hosts[1], api, the_disk(api, vm)) == data


def test_member_takes_the_masters_session_for_its_disks(pool):
    """A client of the pool holds the master's session; the member that
    has a disk serves its export and import with it (asking the master),
    and refuses it once the client logged out."""
    hosts, api, (a, b) = formed(pool, [{}, {}])
    data = pattern(2 * MIB, 11)
    vm, on_b, sr_a, sr_b = parked_on_b(api, hosts, a, b, data, "served-on-b")
    q = {"vdi": api.VDI.get_uuid(on_b), "format": "raw"}
    status, body = http_call(hosts[1], api, "GET", "/export_raw_vdi", q)
    assert (status, body == data) == (200, True), (status, body[:200])
    more = pattern(2 * MIB, 12)
    status, body = http_call(hosts[1], api, "PUT", "/import_raw_vdi", q, more)
    assert status == 200, body[:200]
    assert content(hosts[1], api, on_b) == more
    # a session the master does not know is refused, as is the client's
    # once it has logged out (asked again, nothing cached)
    fake = hosts[0].login()
    fake.ref = "OpaqueRef:00000000-0000-0000-0000-000000000000"
    status, _ = http_call(hosts[1], fake, "GET", "/export_raw_vdi", q)
    assert status == 401
    other = hosts[0].login()
    status, _ = http_call(hosts[1], other, "GET", "/export_raw_vdi", q)
    assert status == 200
    other.logout()
    status, _ = http_call(hosts[1], other, "GET", "/export_raw_vdi", q)
    assert status == 401


def test_forwarded_send_runs_for_the_callers_task(pool):
    """A halted VM's disks leave from the host whose SR holds them: the
    master forwards VM.migrate_send there, and that host works for the
    caller's task (its current_operations key, its progress), as a
    forwarded pool_migrate does."""
    hosts, api, (a, b) = formed(pool, [{}, {}])
    data = pattern(96 * MIB, 7)
    vm, on_b, sr_a, sr_b = parked_on_b(api, hosts, a, b, data, "parked")
    net = api.network.get_all()[0]
    task = api.Async.VM.migrate_send(vm, api.host.migrate_receive(a, net, {}),
                                     False, {on_b: sr_a}, {}, {})
    progress, op_keys = watch_task(api, task, vm, every=0.01)
    assert api.task.get_status(task) == "success", \
        api.task.get_error_info(task)
    print("progress sampled: %s, operations %s" % (sorted(progress), op_keys))
    assert op_keys == {task}, op_keys
    assert any(0 < p < 1 for p in progress), sorted(progress)
    back = the_disk(api, vm)
    assert api.VDI.get_SR(back) == sr_a and gone(api, on_b)
    assert content(hosts[0], api, back) == data


def test_storage_motion_failure_leaves_the_source(pool):
    # the destination fails the copies once they came: all undone
    hosts, api, (a, b) = formed(pool, [{}, {"XAPID_MIG_FAULTS": "disks:1"}])
    sr_a, sr_b = local_sr(api, a), local_sr(api, b)
    data = pattern(2 * MIB, 4)
    vdi = disk_with(api, hosts[0], sr_a, data)
    vm = vm_with_disk(api, "stays", vdi)
    api.VM.start_on(vm, a, False, False)
    before_b = set(api.SR.get_VDIs(sr_b))
    net = api.network.get_all()[0]
    e = expect_error(api.VM.migrate_send, vm,
                     api.host.migrate_receive(b, net, {}), True,
                     {vdi: sr_b}, {}, {})
    assert e.code == "VM_MIGRATE_FAILED"
    assert e.params[:3] == [vm, a, b]
    assert api.VM.get_resident_on(vm) == a
    assert api.VM.get_power_state(vm) == "Running"
    assert the_disk(api, vm) == vdi
    assert content(hosts[0], api, vdi) == data
    assert set(api.SR.get_VDIs(sr_b)) == before_b
    assert not api.VM.get_current_operations(vm)
    # the fault was once: the next attempt goes through
    api.VM.migrate_send(vm, api.host.migrate_receive(b, net, {}), True,
                        {vdi: sr_b}, {}, {})
    assert api.VM.get_resident_on(vm) == b
    assert content(hosts[1], api, the_disk(api, vm)) == data
    api.VM.hard_shutdown(vm)


def test_cross_pool_migrate_send(pool):
    """Two standalone xapids: the VM, its disk and VIF go to the other
    one (another pool), running, and are gone here; a VIF or disk left
    out of the maps is refused first."""
    src, dst = [add_host(pool) for _ in range(2)]
    api, dapi = src.login(), dst.login()
    (sa,), (da,) = api.host.get_all(), dapi.host.get_all()
    sr_s, sr_d = local_sr(api, sa), local_sr(dapi, da)
    data = pattern(8 * MIB, 6)
    vdi = disk_with(api, src, sr_s, data)
    vm = vm_with_disk(api, "traveller", vdi)
    net_s = api.network.get_all()[0]
    net_d = dapi.network.get_all()[0]
    vif = api.VIF.create({"VM": vm, "network": net_s, "device": "0",
                          "MAC": "02:00:00:00:00:42", "MTU": "1500",
                          "other_config": {}, "qos_algorithm_type": "",
                          "qos_algorithm_params": {}})
    api.VM.start(vm, False, False)
    dest = dapi.host.migrate_receive(da, net_d, {})
    assert dest["host"] == da
    e = expect_error(api.VM.assert_can_migrate, vm, dest, True, {},
                     {vif: net_d}, {})
    assert e.details == ["VDI_NOT_IN_MAP", vdi]
    e = expect_error(api.VM.migrate_send, vm, dest, True, {vdi: sr_d}, {},
                     {})
    assert e.details == ["VIF_NOT_IN_MAP", vif]
    api.VM.assert_can_migrate(vm, dest, True, {vdi: sr_d}, {vif: net_d}, {})
    before = set(dapi.VM.get_all())
    uuid = api.VM.get_uuid(vm)
    t0 = time.monotonic()
    moved = api.VM.migrate_send(vm, dest, True, {vdi: sr_d}, {vif: net_d},
                                {})
    print("sim cross-pool migrate_send, 8 MiB disk: %.0f ms"
          % ((time.monotonic() - t0) * 1e3))
    assert moved not in before and moved in dapi.VM.get_all()
    assert dapi.VM.get_uuid(moved) == uuid  # kept, as xapi keeps it
    assert dapi.VM.get_name_label(moved) == "traveller"
    assert dapi.VM.get_power_state(moved) == "Running"
    assert dapi.VM.get_resident_on(moved) == da
    (nvbd,) = dapi.VM.get_VBDs(moved)
    nvdi = dapi.VBD.get_VDI(nvbd)
    assert dapi.VDI.get_SR(nvdi) == sr_d
    assert content(dst, dapi, nvdi) == data
    (nvif,) = dapi.VM.get_VIFs(moved)
    assert dapi.VIF.get_network(nvif) == net_d
    assert dapi.VIF.get_MAC(nvif) == "02:00:00:00:00:42"
    # gone from the source, disk included
    assert vm not in api.VM.get_all()
    assert gone(api, vdi)
    dapi.VM.hard_shutdown(moved)


def test_cross_pool_cpu_check(pool):
    """A running VM goes to another pool's host only if that host's CPU
    has every feature the VM booted with, read over the other pool's API
    (as xapi does); the VM stays where it was."""
    src = add_host(pool)
    api = src.login()
    (sa,) = api.host.get_all()
    words = api.host.get_cpu_info(sa)["features_pv"].split("-")
    w = next(i for i, x in enumerate(words) if int(x, 16))
    fewer = list(words)
    low = int(words[w], 16)
    fewer[w] = "%08x" % (low & (low - 1))  # its lowest feature bit goes
    dst = add_host(pool, env={"XAPID_CPU_FEATURES": "-".join(fewer)})
    dapi = dst.login()
    (da,) = dapi.host.get_all()
    sr_s, sr_d = local_sr(api, sa), local_sr(dapi, da)
    vdi = disk_with(api, src, sr_s, pattern(MIB, 7))
    vm = vm_with_disk(api, "picky", vdi)
    api.VM.start(vm, False, False)
    dest = dapi.host.migrate_receive(da, dapi.network.get_all()[0], {})
    why = "VM last booted on a CPU with features this host's CPU does " \
          "not have."
    e = expect_error(api.VM.assert_can_migrate, vm, dest, True,
                     {vdi: sr_d}, {}, {})
    assert e.details == ["VM_INCOMPATIBLE_WITH_THIS_HOST", vm, da, why]
    before = set(dapi.VM.get_all())
    e = expect_error(api.VM.migrate_send, vm, dest, True, {vdi: sr_d}, {},
                     {})
    assert e.details == ["VM_INCOMPATIBLE_WITH_THIS_HOST", vm, da, why]
    assert api.VM.get_power_state(vm) == "Running"
    assert api.VM.get_resident_on(vm) == sa
    assert set(dapi.VM.get_all()) == before  # nothing made over there
    # halted, it boots afresh there: no CPU check
    api.VM.hard_shutdown(vm)
    api.VM.assert_can_migrate(vm, dest, True, {vdi: sr_d}, {}, {})


def xe(host, *args):
    b = os.path.join(xapilib.BUILD_DIR, "bin", "xe")
    home = tempfile.mkdtemp(dir=host.workdir)
    env = dict(os.environ, HOME=home,
               XE_KNOWN_HOSTS=os.path.join(home, "known"))
    p = subprocess.run([b, "-s", host.address, "-p", str(host.port),
                        "--nossl", "-u", "root", "-pw", host.password]
                       + list(args), capture_output=True, text=True,
                       timeout=120, env=env)
    return p.returncode, p.stdout + p.stderr


def test_xe_vm_migrate_storage_and_remote_master(pool):
    hosts, api, (a, b) = formed(pool, [{}, {}])
    sr_a, sr_b = local_sr(api, a), local_sr(api, b)
    data = pattern(4 * MIB, 8)
    vdi = disk_with(api, hosts[0], sr_a, data)
    vm = vm_with_disk(api, "by-xe", vdi)
    api.VM.start_on(vm, a, False, False)
    uuid = api.VM.get_uuid(vm)
    # inside the pool: vdi:<vdi-uuid>=<sr-uuid> makes it a storage motion
    rc, out = xe(hosts[0], "vm-migrate", "uuid=" + uuid,
                 "host-uuid=" + api.host.get_uuid(b), "live=true",
                 "vdi:%s=%s" % (api.VDI.get_uuid(vdi), api.SR.get_uuid(sr_b)))
    assert rc == 0, out
    assert api.VM.get_resident_on(vm) == b
    new = the_disk(api, vm)
    assert api.VDI.get_SR(new) == sr_b and gone(api, vdi)
    # to another pool, halted: a standalone xapid on 127.0.0.4
    api.VM.hard_shutdown(vm)
    other = add_host(pool)
    oapi = other.login()
    (oh,) = oapi.host.get_all()
    osr = local_sr(oapi, oh)
    rc, out = xe(hosts[0], "vm-migrate", "uuid=" + uuid,
                 "remote-master=" + other.address, "remote-username=root",
                 "remote-password=" + other.password,
                 "vdi:%s=%s" % (api.VDI.get_uuid(new), oapi.SR.get_uuid(osr)))
    assert rc == 0, out
    assert vm not in api.VM.get_all() and gone(api, new)
    (moved,) = oapi.VM.get_by_name_label("by-xe")
    assert oapi.VM.get_uuid(moved) == uuid
    assert oapi.VM.get_power_state(moved) == "Halted"
    nvdi = the_disk(oapi, moved)
    assert oapi.VDI.get_SR(nvdi) == osr
    assert content(other, oapi, nvdi) == data
    # a wrong password on the remote pool: nothing moves
    rc, out = xe(other, "vm-migrate", "uuid=" + oapi.VM.get_uuid(moved),
                 "remote-master=" + hosts[0].address,
                 "remote-username=root", "remote-password=wrong")
    assert rc != 0 and "SESSION_AUTHENTICATION_FAILED" in out, out
    assert oapi.VM.get_all() and moved in oapi.VM.get_all()

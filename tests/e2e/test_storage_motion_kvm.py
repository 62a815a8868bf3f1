"""Storage motion of a running QEMU guest between the local ext SRs of two
xapid hosts (127.0.0.2 and 127.0.0.3, --hypervisor kvm): VM.migrate_send
with a vdi_map has the destination's incoming QEMU export its new disk
over NBD, relayed through a dedicated TLS stream of the destination's
xapid, the source's QEMU mirrors the disk into it while the guest runs,
then the memory moves as for pool_migrate.  A failure of the mirror
leaves the guest on the source with its own disk."""

import hashlib
import os
import shutil
import time

import pytest

from guestlib import (MIB, ask, assert_runs_on, console, pv_vm, qemu_pids,
                      qmp_status, serial_log)
from migratelib import (content, disk_with, gone, kvm_pool, local_sr,
                        pattern, the_disk)
from poollib import wait_for
from xapilib import expect_error

# XA_SXM_DISK_MIB: a bigger disk for the figures (the suite uses 64)
DISK = int(os.environ.get("XA_SXM_DISK_MIB", "64")) * MIB

if not shutil.which("qemu-system-x86_64"):
    pytest.skip("qemu-system-x86_64 is not installed (qemu-system-x86)",
                allow_module_level=True)


def digest(host, api, vdi):
    """SHA-256 of the VDI's raw content, read on 'host'."""
    return hashlib.sha256(content(host, api, vdi)).hexdigest()


def disky_guest(api, guests, vdi):
    vm = pv_vm(api, "disky", os.path.join(guests, "hello.elf"), 32 * MIB)
    api.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0",
                    "bootable": False, "mode": "RW", "type": "Disk",
                    "empty": False, "other_config": {},
                    "qos_algorithm_type": "", "qos_algorithm_params": {}})
    return vm


def test_kvm_storage_motion_between_local_srs(pool, guests):
    hosts, api, (a, b) = kvm_pool(pool, [
        {"XAPID_MIG_FAULTS": "nbdcut:%d,commit:1" % (8 * MIB)}, {}])
    sr_a, sr_b = local_sr(api, a), local_sr(api, b)
    data = pattern(DISK, 5)
    want = hashlib.sha256(data).hexdigest()
    vdi = disk_with(api, hosts[0], sr_a, data)
    vm = disky_guest(api, guests, vdi)
    api.VM.start_on(vm, a, False, False)
    wait_for(lambda: b"MB-GUEST-READY" in serial_log(hosts[0], api, vm),
             timeout=60)
    pid_a = qemu_pids(hosts[0].state_dir)
    net = api.network.get_all()[0]
    before_b = set(api.SR.get_VDIs(sr_b))

    # 1. a cuts its mirror stream after 8 MiB (once): the guest stays on
    # a, running the same QEMU on its own disk, b keeps nothing
    e = expect_error(api.VM.migrate_send, vm,
                     api.host.migrate_receive(b, net, {}), True,
                     {vdi: sr_b}, {}, {})
    assert e.details[:4] == ["VM_MIGRATE_FAILED", vm, a, b], e.details
    assert "mirror" in e.details[4], e.details
    wait_for(lambda: not qemu_pids(hosts[1].state_dir))
    assert_runs_on(hosts, [a, b], api, vm, a)
    assert qemu_pids(hosts[0].state_dir) == pid_a
    assert qmp_status(hosts[0], api, vm) == "running"
    assert the_disk(api, vm) == vdi
    assert set(api.SR.get_VDIs(sr_b)) == before_b
    assert not api.VM.get_current_operations(vm)

    # 2. the disk moves with the running guest
    t0 = time.monotonic()
    api.VM.migrate_send(vm, api.host.migrate_receive(b, net, {}), True,
                        {vdi: sr_b}, {}, {})
    wall = time.monotonic() - t0
    oc = api.VM.get_other_config(vm)
    print("kvm storage motion a->b, %d MiB disk, 32 MiB guest: wall %.2f s, "
          "memory total %s ms, downtime %s ms"
          % (DISK // MIB, wall, oc["last_migration_total_ms"],
             oc["last_migration_downtime_ms"]))
    assert_runs_on(hosts, [a, b], api, vm, b)
    assert qmp_status(hosts[1], api, vm) == "running"
    # the guest went on: no second boot on b
    assert b"MB-GUEST-READY" not in serial_log(hosts[1], api, vm)
    new = the_disk(api, vm)
    assert new != vdi and api.VDI.get_SR(new) == sr_b
    assert gone(api, vdi)
    assert not api.VM.get_current_operations(vm)

    # 3. back to a, which fails its commit once everything came: the
    # held QEMU on b goes on with b's disk, a keeps no new disk
    pid_b = qemu_pids(hosts[1].state_dir)
    before_a = set(api.SR.get_VDIs(sr_a))
    e = expect_error(api.VM.migrate_send, vm,
                     api.host.migrate_receive(a, net, {}), True,
                     {new: sr_a}, {}, {})
    assert e.details[:4] == ["VM_MIGRATE_FAILED", vm, b, a], e.details
    assert "fault injection" in e.details[4], e.details
    wait_for(lambda: not qemu_pids(hosts[0].state_dir))
    assert_runs_on(hosts, [a, b], api, vm, b)
    assert qemu_pids(hosts[1].state_dir) == pid_b
    assert qmp_status(hosts[1], api, vm) == "running"
    assert the_disk(api, vm) == new
    assert set(api.SR.get_VDIs(sr_a)) == before_a
    # 4. and back for good: b's disk goes to a
    api.VM.migrate_send(vm, api.host.migrate_receive(a, net, {}), True,
                        {new: sr_a}, {}, {})
    assert_runs_on(hosts, [a, b], api, vm, a)
    back = the_disk(api, vm)
    assert api.VDI.get_SR(back) == sr_a and gone(api, new)
    api.VM.hard_shutdown(vm)
    for h in hosts:
        assert not qemu_pids(h.state_dir)
    # the guest only read its disk: the bytes are the ones put there
    assert digest(hosts[0], api, back) == want
    # the mirrors' own figures (XA_SXM_TRACE=1: every log line)
    for h in hosts:
        for line in h.stderr_text(200000).splitlines():
            if os.environ.get("XA_SXM_TRACE") or "mirror(s) ready" in line:
                print(h.address, line[-140:])


def test_kvm_cross_pool_migration(pool, guests):
    """Two standalone kvm xapids: the running guest, its disk and its
    record move to the other pool and are gone here."""
    src, dst = [kvm_pool(pool, [{}])[0][0] for _ in range(2)]
    api, dapi = src.login(), dst.login()
    (sa,), (da,) = api.host.get_all(), dapi.host.get_all()
    data = pattern(DISK, 7)
    want = hashlib.sha256(data).hexdigest()
    vdi = disk_with(api, src, local_sr(api, sa), data)
    vm = disky_guest(api, guests, vdi)
    api.VM.start(vm, False, False)
    wait_for(lambda: b"MB-GUEST-READY" in serial_log(src, api, vm),
             timeout=60)
    dest = dapi.host.migrate_receive(da, dapi.network.get_all()[0], {})
    t0 = time.monotonic()
    moved = api.VM.migrate_send(vm, dest, True,
                                {vdi: local_sr(dapi, da)}, {}, {})
    wall = time.monotonic() - t0
    print("kvm cross-pool migration, %d MiB disk, 32 MiB guest: %.2f s"
          % (DISK // MIB, wall))
    assert vm not in api.VM.get_all() and gone(api, vdi)
    assert not qemu_pids(src.state_dir)
    assert dapi.VM.get_power_state(moved) == "Running"
    assert dapi.VM.get_resident_on(moved) == da
    assert len(qemu_pids(dst.state_dir)) == 1
    assert qmp_status(dst, dapi, moved) == "running"
    assert b"MB-GUEST-READY" not in serial_log(dst, dapi, moved)
    nvdi = the_disk(dapi, moved)
    dapi.VM.hard_shutdown(moved)
    assert digest(dst, dapi, nvdi) == want


def test_kvm_storage_motion_of_a_writing_linux_guest(pool, linux_guest):
    """A Linux guest (TCG) keeps writing random data all over its disk
    while the disk moves a -> b; once it stopped and synced, what it
    reads from its disk on b and what the new VDI holds offline are the
    same bytes, and the guest never rebooted."""
    hosts, api, (a, b) = kvm_pool(pool, [{}, {}])
    sr_a, sr_b = local_sr(api, a), local_sr(api, b)
    vdi = disk_with(api, hosts[0], sr_a, pattern(32 * MIB, 9))
    vm = pv_vm(api, "writer", os.path.join(linux_guest, "vmlinuz"),
               256 * MIB, initrd=os.path.join(linux_guest, "initrd.img"),
               args="console=ttyS0 quiet panic=-1",
               platform={"accel": "tcg"})
    api.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0",
                    "bootable": False, "mode": "RW", "type": "Disk",
                    "empty": False, "other_config": {},
                    "qos_algorithm_type": "", "qos_algorithm_params": {}})
    api.VM.start_on(vm, a, False, False)
    wait_for(lambda: b"TICK" in serial_log(hosts[0], api, vm), timeout=180)
    # 1 MiB of random bytes at a time, all over the 32 MiB, synced
    console(hosts[0], api, vm,
            "(i=0; while [ ! -e /tmp/stop ]; do dd if=/dev/urandom "
            "of=/dev/vda bs=64k count=16 seek=$(( (i*7%32)*16 )) "
            "conv=fsync 2>/dev/null; i=$((i+1)); echo $i > /tmp/n; "
            "done; sync; echo yes > /tmp/stopped) >/dev/null 2>&1 &")

    time.sleep(2)
    before = int(ask(hosts[0], api, vm, "BEFORE", "cat /tmp/n"))
    assert before > 0
    net = api.network.get_all()[0]
    t0 = time.monotonic()
    api.VM.migrate_send(vm, api.host.migrate_receive(b, net, {}), True,
                        {vdi: sr_b}, {}, {})
    print("writing Linux guest, 32 MiB disk a->b: %.2f s"
          % (time.monotonic() - t0))
    assert_runs_on(hosts, [a, b], api, vm, b)
    new = the_disk(api, vm)
    assert api.VDI.get_SR(new) == sr_b and gone(api, vdi)
    time.sleep(1)  # it goes on writing on b
    after = int(ask(hosts[1], api, vm, "AFTER", "cat /tmp/n"))
    print("writes: %d before the move, %d after" % (before, after))
    assert after > before
    console(hosts[1], api, vm, "touch /tmp/stop")
    assert ask(hosts[1], api, vm, "STOPPED",
               "touch /tmp/stop; sleep 2; cat /tmp/stopped") == "yes"
    seen = ask(hosts[1], api, vm, "SUM",
               "sync; echo 3 > /proc/sys/vm/drop_caches; "
               "sha256sum /dev/vda | cut -c1-64", timeout=60)
    log_b = serial_log(hosts[1], api, vm)
    assert b"XAPID-GUEST-READY" not in log_b  # no second boot
    api.VM.hard_shutdown(vm)
    assert digest(hosts[1], api, new) == seen
    # and it did write: the disk is not what was put there
    assert seen != hashlib.sha256(pattern(32 * MIB, 9)).hexdigest()

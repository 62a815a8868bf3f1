"""The QEMU hypervisor driver (--hypervisor kvm) with real guests.

Guests are built at test time, once per run (conftest's guests and
linux_guest), from what Debian installs (tests/fixtures/guests): the tiny
multiboot guests (run under KVM where /dev/kvm opens, else TCG: never
skipped) and a Linux guest (Debian's cloud kernel + a busybox initramfs,
TCG on q35; this machine's nested-PVM /dev/kvm boots no stock kernel).  The console is read the way xapi's
clients read it: CONNECT /console?ref=...&session_id=... ."""

import json
import os
import re
import shutil
import socket
import time

import pytest

import ovs_env
import xapilib
from guestlib import MIB, Console, pv_vm, qemu_pids, qemu_procs
from xapilib import XapiError, expect_error

if not shutil.which("qemu-system-x86_64"):
    pytest.skip("qemu-system-x86_64 is not installed (qemu-system-x86)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def ovs():
    """A private ovs-vswitchd (userspace datapath, in a namespace of its
    own) for the guests' NICs, or, when this machine cannot run one, a
    string saying why (the checks needing it then skip with it)."""
    why = ovs_env.missing()
    env = None
    if why is None:
        env = ovs_env.OvsEnv(nics=1)
        try:
            env.start()
        except Exception as e:  # noqa: BLE001 - reported as the reason
            env.close()
            env, why = None, "cannot run ovs-vswitchd here: %s" % e
    yield env or why
    if env:
        env.close()


@pytest.fixture(scope="module")
def server(xapid_module_factory, ovs):
    extra = ["--hypervisor", "kvm"]
    if not isinstance(ovs, str):
        extra += ovs.xapid_args()
    return xapid_module_factory.start(extra_args=extra)


@pytest.fixture(scope="module")
def api(server):
    return server.login()


def make_vm(api, name, kernel, initrd="", args="", memory=64 * MIB,
            accel=None, network=None, mac=None):
    vm = pv_vm(api, name, kernel, memory, initrd, args,
               {"accel": accel} if accel else None)
    if network:
        api.VIF.create({"device": "0", "network": network, "VM": vm,
                        "MAC": mac, "MTU": "1500", "other_config": {},
                        "qos_algorithm_type": "",
                        "qos_algorithm_params": {}})
    return vm


# ---- tiny guests: the lifecycle, fast -----------------------------------


def test_tiny_lifecycle(server, api, guests):
    vm = make_vm(api, "tiny", os.path.join(guests, "hello.elf"))
    api.VM.start(vm, False, False)
    assert api.VM.get_power_state(vm) == "Running"
    c = Console(server, api, vm)
    c.wait(b"MB-GUEST-READY", 30)
    c.close()
    api.VM.pause(vm)
    assert api.VM.get_power_state(vm) == "Paused"
    api.VM.unpause(vm)
    assert api.VM.get_power_state(vm) == "Running"
    api.VM.suspend(vm)
    assert api.VM.get_power_state(vm) == "Suspended"
    assert not qemu_procs(server.state_dir)
    api.VM.resume(vm, False, False)
    assert api.VM.get_power_state(vm) == "Running"
    domid = int(api.VM.get_domid(vm))
    api.VM.hard_reboot(vm)
    assert api.VM.get_power_state(vm) == "Running"
    assert int(api.VM.get_domid(vm)) != domid
    api.VM.clean_reboot(vm)  # system_reset: same QEMU
    assert api.VM.get_power_state(vm) == "Running"
    api.VM.hard_shutdown(vm)
    assert api.VM.get_power_state(vm) == "Halted"
    assert not qemu_procs(server.state_dir), "QEMU left behind (or a zombie)"


def tap_exists(ovs, name):
    if isinstance(ovs, str):
        return os.path.exists("/sys/class/net/" + name)
    return name in ovs.ns_ip("-o", "link", "show")


def wait_halted(api, vm, timeout=10):
    deadline = time.monotonic() + timeout
    while api.VM.get_power_state(vm) != "Halted":
        assert time.monotonic() < deadline, "VM not Halted after QEMU died"
        time.sleep(0.05)


def test_guest_poweroff_and_crash_halt_the_vm(server, api, guests, ovs):
    """A QEMU killed while running takes its VM to Halted, says so in the
    log, leaves no zombie, tap or switch port, and the VM starts again."""
    net = api.network.create({"name_label": "kvm-crash", "name_description":
                              "", "MTU": "1500", "other_config": {}})
    vm = make_vm(api, "crashy", os.path.join(guests, "hello.elf"),
                 network=net, mac="02:77:00:00:00:09")
    api.VM.start(vm, False, False)
    tap = "tap%s.0" % api.VM.get_domid(vm)
    assert tap_exists(ovs, tap)
    bridge = api.network.get_bridge(net)
    if not isinstance(ovs, str):
        ovs.wait_for(lambda: tap in ovs.ports(bridge), what="tap on bridge")
    [(pid, _)] = qemu_procs(server.state_dir)
    os.kill(pid, 9)
    wait_halted(api, vm)
    assert not qemu_procs(server.state_dir), "QEMU zombie left behind"
    assert not tap_exists(ovs, tap), "stray tap " + tap
    if not isinstance(ovs, str):
        assert tap not in ovs.all_ports(), "stray switch port " + tap
    uuid = api.VM.get_uuid(vm)
    log = server.stderr_text(200000)
    assert re.search(r"VM %s: QEMU \(pid %d\) killed by signal 9" %
                     (uuid, pid), log), log[-2000:]
    api.VM.start(vm, False, False)  # the next start works
    assert api.VM.get_power_state(vm) == "Running"
    api.VM.hard_shutdown(vm)
    assert not qemu_procs(server.state_dir)


NEVER_ANSWERS = """#!/bin/sh
# QEMU without its monitor for the VM named never-answers: the QMP socket
# exists (a chardev) but nobody speaks QMP on it.
case " $* " in
*" guest=never-answers "*)
    for a in "$@"; do
        shift
        if [ "$drop" = 1 ]; then drop=; continue; fi
        if [ "$a" = -mon ]; then drop=1; continue; fi
        set -- "$@" "$a"
    done ;;
esac
exec qemu-system-x86_64 "$@"
"""


def test_qemu_that_never_answers_qmp(xapid_factory, guests, tmp_path,
                                     monkeypatch):
    """VM.start of a QEMU whose monitor never greets: the task fails with
    a message, the log says it, the QEMU is killed and reaped, and the
    next start (of a QEMU that answers) works."""
    wrapper = tmp_path / "qemu"
    wrapper.write_text(NEVER_ANSWERS)
    wrapper.chmod(0o755)
    monkeypatch.setenv("XAPID_QEMU", str(wrapper))
    # Short, but not so short that a slow start of the good QEMU fails.
    monkeypatch.setenv("XAPID_QMP_START_TIMEOUT", "6")
    x = xapid_factory.start(extra_args=["--hypervisor", "kvm"])
    a = x.login()
    vm = make_vm(a, "never-answers", os.path.join(guests, "hello.elf"))
    task = a.call("Async.VM.start", vm, False, False)
    deadline = time.monotonic() + 60
    while a.task.get_status(task) == "pending":
        assert time.monotonic() < deadline, "VM.start never ended"
        time.sleep(0.1)
    assert a.task.get_status(task) == "failure"
    info = " ".join(a.task.get_error_info(task))
    assert "never answered on its monitor" in info, info
    assert a.VM.get_power_state(vm) == "Halted"
    assert not qemu_procs(x.state_dir), "QEMU left behind (or a zombie)"
    assert re.search(r"VM %s: start failed: .*never answered" %
                     a.VM.get_uuid(vm), x.stderr_text(200000))
    a.VM.set_name_label(vm, "answers")
    a.VM.start(vm, False, False)
    assert a.VM.get_power_state(vm) == "Running"
    a.VM.hard_shutdown(vm)
    assert not qemu_procs(x.state_dir)


def test_bad_qemu_start_fails_cleanly(server, api, guests):
    vm = make_vm(api, "bad", os.path.join(guests, "hello.elf"))
    api.VM.set_platform(vm, {"machine": "no-such-machine"})
    with pytest.raises(XapiError) as e:
        api.VM.start(vm, False, False)
    assert "QEMU" in " ".join(e.value.details), e.value.details
    assert api.VM.get_power_state(vm) == "Halted"
    assert not qemu_procs(server.state_dir)
    api.VM.set_platform(vm, {})
    api.VM.start(vm, False, False)
    assert api.VM.get_power_state(vm) == "Running"
    api.VM.hard_shutdown(vm)


def new_disk(api, vm, userdevice, size=16 * MIB):
    """A fresh VDI of the local SR and its VBD on 'vm' (not plugged)."""
    sr = next(r for r, v in api.SR.get_all_records().items()
              if v["name_label"] == "Local storage")
    vdi = api.VDI.create({"SR": sr, "virtual_size": str(size),
                          "type": "user", "sharable": False,
                          "read_only": False, "other_config": {},
                          "name_label": "hotplug"})
    return api.VBD.create({"VM": vm, "VDI": vdi, "userdevice": userdevice,
                           "bootable": False, "mode": "RW", "type": "Disk",
                           "empty": False, "other_config": {},
                           "qos_algorithm_type": "",
                           "qos_algorithm_params": {}})


def new_vif(api, vm, net, device, mac):
    return api.VIF.create({"device": device, "network": net, "VM": vm,
                           "MAC": mac, "MTU": "1500", "other_config": {},
                           "qos_algorithm_type": "",
                           "qos_algorithm_params": {}})


def qmp(server, vm_uuid, command, **args):
    """One QMP command on the VM's QEMU, the way xapid talks to it (one
    client at a time: only while xapid is not busy with that VM)."""
    path = os.path.join(server.state_dir, "kvm", vm_uuid, "qmp.sock")
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    f = s.makefile("rw")
    json.loads(f.readline())
    for req in ({"execute": "qmp_capabilities"},
                {"execute": command, "arguments": args}):
        f.write(json.dumps(req) + "\n")
        f.flush()
        while True:
            r = json.loads(f.readline())
            if "event" not in r:
                break
    s.close()
    assert "return" in r, r
    return r["return"]


def test_tiny_hotplug(server, api, guests, ovs):
    """VBD.plug and VIF.plug on a running VM (q35: into the PCIe root
    ports kept for them): QEMU gets the devices, the new tap lands on the
    bridge, suspend + resume keeps them; the tiny guest has no hot-plug
    driver, so its unplug is refused as xapi refuses it (the Linux guest
    shows a real unplug); the shutdown takes the hot-plugged tap away."""
    net = api.network.create({"name_label": "kvm-hotplug",
                              "name_description": "", "MTU": "1500",
                              "other_config": {}})
    vm = make_vm(api, "hotplug", os.path.join(guests, "hello.elf"))
    api.VM.set_platform(vm, {"machine": "q35"})
    api.VM.start(vm, False, False)
    vbd = new_disk(api, vm, "1")
    api.VBD.plug(vbd)
    assert api.VBD.get_currently_attached(vbd)
    vif = new_vif(api, vm, net, "0", "02:77:00:00:00:0a")
    api.VIF.plug(vif)
    assert api.VIF.get_currently_attached(vif)
    uuid = api.VM.get_uuid(vm)
    devs = {d["name"] for d in qmp(server, uuid, "qom-list",
                                   path="/machine/peripheral")}
    assert {"vbd1", "nic0"} <= devs, devs
    tap = "tap%s.0" % api.VM.get_domid(vm)
    assert tap_exists(ovs, tap)
    if not isinstance(ovs, str):
        bridge = api.network.get_bridge(net)
        ovs.wait_for(lambda: tap in ovs.ports(bridge), what="tap on bridge")
        assert ovs.ext_ids("Interface", tap)["xs-vif-uuid"] == \
            api.VIF.get_uuid(vif)
    # Suspend + resume: the QEMU rebuilt from the VM's devices takes the
    # saved state of the one with hot-plugged devices (same topology).
    api.VM.suspend(vm)
    assert not tap_exists(ovs, tap)
    api.VM.resume(vm, False, False)
    assert api.VM.get_power_state(vm) == "Running"
    devs = {d["name"] for d in qmp(server, uuid, "qom-list",
                                   path="/machine/peripheral")}
    assert {"vbd1", "nic0"} <= devs, devs
    tap = "tap%s.0" % api.VM.get_domid(vm)
    assert tap_exists(ovs, tap)
    # the tiny guest never lets a device go: xapi's answer, and the disk
    # is still attached
    e = expect_error(api.VBD.unplug, vbd)
    assert e.details[:3] == ["DEVICE_DETACH_REJECTED", "VBD", vbd], e.details
    assert "hot-plug" in e.details[3]
    assert api.VBD.get_currently_attached(vbd)
    api.VM.hard_shutdown(vm)
    assert not qemu_procs(server.state_dir)
    assert not tap_exists(ovs, tap), "stray tap " + tap
    if not isinstance(ovs, str):
        assert tap not in ovs.all_ports(), "stray switch port " + tap


def test_restart_adopts_running_qemu(xapid_factory, guests):
    x = xapid_factory.start(extra_args=["--hypervisor", "kvm"])
    a = x.login()
    vm = make_vm(a, "survivor", os.path.join(guests, "hello.elf"))
    a.VM.start(vm, False, False)
    [(pid, _)] = qemu_procs(x.state_dir)
    x.stop()
    x.start()
    a = x.login()
    assert a.VM.get_power_state(vm) == "Running"
    assert [p for p, _ in qemu_procs(x.state_dir)] == [pid]
    a.VM.pause(a.VM.get_by_uuid(a.VM.get_uuid(vm)))
    assert a.VM.get_power_state(vm) == "Paused"
    a.VM.hard_shutdown(vm)
    assert a.VM.get_power_state(vm) == "Halted"
    deadline = time.monotonic() + 5
    while qemu_procs(x.state_dir) and time.monotonic() < deadline:
        time.sleep(0.05)  # no longer our child: PID 1 reaps it
    assert not qemu_pids(x.state_dir)


# ---- the Linux guest under TCG -------------------------------------------


def linux_vm(api, guests, name, ip, peer=None, network=None, mac=None):
    args = "console=ttyS0 quiet panic=-1 xapid.ip=%s" % ip
    if peer:
        args += " xapid.peer=%s" % peer
    return make_vm(api, name, os.path.join(guests, "vmlinuz"),
                   os.path.join(guests, "initrd.img"), args,
                   memory=256 * MIB, accel="tcg", network=network, mac=mac)


TICK = re.compile(rb"TICK (\d+\.\d+)")


def last_tick(c, start=0):
    ticks = TICK.findall(c.data, start)
    return float(ticks[-1]) if ticks else None


def check_taps_on_bridge(ovs, api, net, vms):
    """Each VM's tap is a port of the network's bridge with the
    external-ids xapi sets."""
    bridge = api.network.get_bridge(net)
    ports = ovs.wait_for(lambda: ovs.ports(bridge), what="ports on " + bridge)
    for vm in vms:
        [vif] = api.VM.get_VIFs(vm)
        tap = "tap%s.%s" % (api.VM.get_domid(vm), api.VIF.get_device(vif))
        assert tap in ports, (tap, ports)
        ids = ovs.ext_ids("Interface", tap)
        assert ids["xs-vm-uuid"] == api.VM.get_uuid(vm), ids
        assert ids["xs-vif-uuid"] == api.VIF.get_uuid(vif), ids
        assert ids["xs-network-uuid"] == api.network.get_uuid(net), ids
        assert ids["attached-mac"] == api.VIF.get_MAC(vif), ids


def hotplug_linux(server, api, ovs, net, vm, c):
    """VBD and VIF plug/unplug on a running Linux guest: it sees the
    disk and the NIC come and go (PCIe hot-plug), the tap comes and goes
    from the bridge."""
    vbd = new_disk(api, vm, "1")
    vif = new_vif(api, vm, net, "1", "02:77:00:00:01:02")
    api.VBD.plug(vbd)
    api.VIF.plug(vif)
    tap = "tap%s.1" % api.VM.get_domid(vm)
    assert tap_exists(ovs, tap)
    mark = len(c.data)
    c.send("i=0; while ! [ -e /sys/block/vda -a -e /sys/class/net/eth1 ] && "
           "[ $i -lt 150 ]; do sleep 0.2; i=$((i+1)); done; "
           "echo H''P-$(ls /sys/block /sys/class/net | tr -s '\\n:' - )-E''ND; "
           "dmesg | tail -5\n")
    m = c.wait(re.compile(rb"HP-(.*?)-END"), 60, mark)
    assert b"-vda-" in m.group(0) and b"-eth1-" in m.group(0), \
        c.data[mark:].decode(errors="replace")
    api.VBD.unplug(vbd)
    api.VIF.unplug(vif)
    assert not api.VBD.get_currently_attached(vbd)
    assert not api.VIF.get_currently_attached(vif)
    mark = len(c.data)
    c.send("while [ -e /sys/block/vda -o -e /sys/class/net/eth1 ]; "
           "do sleep 0.2; done; echo UN''PLUGGED\n")
    c.wait(b"UNPLUGGED", 30, mark)
    assert not tap_exists(ovs, tap), "stray tap " + tap
    if not isinstance(ovs, str):
        assert tap not in ovs.all_ports(), "stray switch port " + tap


def test_linux_guests(server, api, linux_guest, ovs):
    net = api.network.create({"name_label": "kvm-test", "name_description":
                              "", "MTU": "1500", "other_config": {}})
    a = linux_vm(api, linux_guest, "lin-a", "10.77.0.1/24",
                 peer="10.77.0.2", network=net, mac="02:77:00:00:00:01")
    b = linux_vm(api, linux_guest, "lin-b", "10.77.0.2/24", network=net,
                 mac="02:77:00:00:00:02")
    api.VM.start(b, False, False)
    api.VM.start(a, False, False)
    ca, cb = Console(server, api, a), Console(server, api, b)
    ca.wait(b"XAPID-GUEST-READY", 90)
    cb.wait(b"XAPID-GUEST-READY", 90)
    # A pings B through the network's OVS bridge (with the sim network
    # backend taps are bridged nowhere: checked at the end, as a skip).
    if not isinstance(ovs, str):
        check_taps_on_bridge(ovs, api, net, [a, b])
        ca.wait(b"PING-OK 10.77.0.2", 90)
    hotplug_linux(server, api, ovs, net, b, cb)
    # pause / unpause: the guest stops ticking, then goes on
    api.VM.pause(a)
    assert api.VM.get_power_state(a) == "Paused"
    api.VM.unpause(a)
    # suspend / resume: uptime continues from where it was
    ca.wait(TICK, 10, len(ca.data) - 1)
    before = last_tick(ca)
    api.VM.suspend(a)
    assert api.VM.get_power_state(a) == "Suspended"
    ca.close()
    api.VM.resume(a, False, False)
    ca = Console(server, api, a)
    mark = len(ca.data)
    ca.wait(TICK, 30, mark)
    time.sleep(1.5)
    ca.wait(TICK, 10, mark)
    after = last_tick(ca, mark)
    assert after is not None and after >= before, (before, after)
    assert after < before + 30, "the guest rebooted? %r -> %r" % (before,
                                                                  after)
    # the console goes both ways
    ca.send("echo hello-$((6*7))\n")
    ca.wait(b"hello-42", 20)
    # clean reboot (system_reset): the guest comes up again
    mark = len(cb.data)
    api.VM.clean_reboot(b)
    cb.wait(b"XAPID-GUEST-READY", 90, mark)
    # clean shutdown: the guest's init handles the ACPI power button
    api.VM.clean_shutdown(a)
    assert api.VM.get_power_state(a) == "Halted"
    api.VM.hard_shutdown(b)
    assert api.VM.get_power_state(b) == "Halted"
    ca.close()
    cb.close()
    assert not qemu_procs(server.state_dir)
    if isinstance(ovs, str):
        pytest.skip("guest A pinging B through OVS not checked: %s" % ovs)

"""The QEMU hypervisor driver (--hypervisor kvm) with real guests.

Guests are built here, at test time, from what Debian installs
(tests/fixtures/guests): the tiny multiboot guests (run under KVM where
/dev/kvm opens, else TCG: never skipped) and a Linux guest (Debian's cloud
kernel + a busybox initramfs, TCG on q35; this machine's nested-PVM
/dev/kvm boots no stock kernel).  The console is read the way xapi's
clients read it: CONNECT /console?ref=...&session_id=... ."""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

import xapilib
from xapilib import XapiError

HERE = os.path.dirname(os.path.abspath(__file__))
GUESTS_SRC = os.path.join(HERE, "..", "fixtures", "guests")
MIB = 1 << 20

if not shutil.which("qemu-system-x86_64"):
    pytest.skip("qemu-system-x86_64 is not installed (qemu-system-x86)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def guests():
    out = tempfile.mkdtemp(prefix="xapid-guests-")
    subprocess.run([os.path.join(GUESTS_SRC, "build-tiny.sh"), out],
                   check=True, capture_output=True)
    linux = subprocess.run([os.path.join(GUESTS_SRC, "build-linux.sh"), out],
                           capture_output=True, text=True)
    yield {"dir": out, "linux": linux.returncode == 0,
           "linux_why": linux.stderr.strip()}
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def server(xapid_module_factory):
    return xapid_module_factory.start(extra_args=["--hypervisor", "kvm"])


@pytest.fixture(scope="module")
def api(server):
    return server.login()


def make_vm(api, name, kernel, initrd="", args="", memory=64 * MIB,
            accel=None, network=None, mac=None):
    t = api.VM.get_by_name_label("Debian Bookworm 12")[0]
    rec = api.VM.get_record(t)
    m = str(memory)
    rec.update(name_label=name, is_a_template=False, HVM_boot_policy="",
               PV_kernel=kernel, PV_ramdisk=initrd, PV_args=args,
               memory_static_max=m, memory_dynamic_max=m,
               memory_dynamic_min=m, memory_static_min=m,
               other_config={}, platform={"accel": accel} if accel else {})
    vm = api.VM.create(rec)
    if network:
        api.VIF.create({"device": "0", "network": network, "VM": vm,
                        "MAC": mac, "MTU": "1500", "other_config": {},
                        "qos_algorithm_type": "",
                        "qos_algorithm_params": {}})
    return vm


class Console:
    """A VM's text console through CONNECT /console."""

    def __init__(self, server, api, vm):
        cons = [c for c in api.VM.get_consoles(vm)
                if api.console.get_protocol(c) == "vt100"]
        assert cons, "no vt100 console for a running PV guest"
        self.sock = socket.create_connection(("127.0.0.1", server.port))
        self.sock.sendall(("CONNECT /console?ref=%s&session_id=%s HTTP/1.0"
                           "\r\n\r\n" % (cons[0], api.ref)).encode())
        self.data = b""
        self.wait(b"HTTP/1.1 200 OK\r\n\r\n", 10)

    def wait(self, what, timeout, start=0):
        """Waits for 'what' (bytes or a compiled regex) after offset
        'start'; returns the match end offset."""
        deadline = time.monotonic() + timeout
        while True:
            if isinstance(what, bytes):
                i = self.data.find(what, start)
                if i >= 0:
                    return i + len(what)
            else:
                m = what.search(self.data, start)
                if m:
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("console: no %r in %r" %
                                     (what, self.data[-600:]))
            self.sock.settimeout(left)
            try:
                b = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not b:
                raise AssertionError("console closed; got %r" %
                                     self.data[-600:])
            self.data += b

    def send(self, text):
        self.sock.sendall(text.encode())

    def close(self):
        self.sock.close()


def qemu_pids(state_dir):
    """Pids of the QEMUs of this server (their command line names its
    state directory)."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % p, "rb") as f:
                cl = f.read()
            with open("/proc/%s/stat" % p) as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if b"qemu-system" in cl and state_dir.encode() in cl:
            pids.append((int(p), zombie))
    return pids


# ---- tiny guests: the lifecycle, fast -----------------------------------


def test_tiny_lifecycle(server, api, guests):
    vm = make_vm(api, "tiny", os.path.join(guests["dir"], "hello.elf"))
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
    assert not qemu_pids(server.state_dir)
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
    assert not qemu_pids(server.state_dir), "QEMU left behind (or a zombie)"


def test_guest_poweroff_and_crash_halt_the_vm(server, api, guests):
    """A QEMU that goes away on its own takes its VM to Halted."""
    vm = make_vm(api, "crashy", os.path.join(guests["dir"], "hello.elf"))
    api.VM.start(vm, False, False)
    [(pid, _)] = qemu_pids(server.state_dir)
    os.kill(pid, 9)
    deadline = time.monotonic() + 10
    while api.VM.get_power_state(vm) != "Halted":
        assert time.monotonic() < deadline, "VM not Halted after QEMU died"
        time.sleep(0.05)
    assert not qemu_pids(server.state_dir)
    api.VM.start(vm, False, False)  # the next start works
    api.VM.hard_shutdown(vm)


def test_bad_qemu_start_fails_cleanly(server, api, guests):
    vm = make_vm(api, "bad", os.path.join(guests["dir"], "hello.elf"))
    api.VM.set_platform(vm, {"machine": "no-such-machine"})
    with pytest.raises(XapiError) as e:
        api.VM.start(vm, False, False)
    assert "QEMU" in " ".join(e.value.details), e.value.details
    assert api.VM.get_power_state(vm) == "Halted"
    assert not qemu_pids(server.state_dir)
    api.VM.set_platform(vm, {})
    api.VM.start(vm, False, False)
    assert api.VM.get_power_state(vm) == "Running"
    api.VM.hard_shutdown(vm)


def test_restart_adopts_running_qemu(xapid_factory, guests):
    x = xapid_factory.start(extra_args=["--hypervisor", "kvm"])
    a = x.login()
    vm = make_vm(a, "survivor", os.path.join(guests["dir"], "hello.elf"))
    a.VM.start(vm, False, False)
    [(pid, _)] = qemu_pids(x.state_dir)
    x.stop()
    x.start()
    a = x.login()
    assert a.VM.get_power_state(vm) == "Running"
    assert [p for p, _ in qemu_pids(x.state_dir)] == [pid]
    a.VM.pause(a.VM.get_by_uuid(a.VM.get_uuid(vm)))
    assert a.VM.get_power_state(vm) == "Paused"
    a.VM.hard_shutdown(vm)
    assert a.VM.get_power_state(vm) == "Halted"
    deadline = time.monotonic() + 5
    while qemu_pids(x.state_dir) and time.monotonic() < deadline:
        time.sleep(0.05)  # no longer our child: PID 1 reaps it
    assert not [p for p, z in qemu_pids(x.state_dir) if not z]


# ---- the Linux guest under TCG -------------------------------------------


def linux_vm(api, guests, name, ip, peer=None, network=None, mac=None):
    if not guests["linux"]:
        pytest.skip("no Linux guest: %s" % guests["linux_why"])
    args = "console=ttyS0 quiet panic=-1 xapid.ip=%s" % ip
    if peer:
        args += " xapid.peer=%s" % peer
    return make_vm(api, name, os.path.join(guests["dir"], "vmlinuz"),
                   os.path.join(guests["dir"], "initrd.img"), args,
                   memory=256 * MIB, accel="tcg", network=network, mac=mac)


TICK = re.compile(rb"TICK (\d+\.\d+)")


def last_tick(c, start=0):
    ticks = TICK.findall(c.data, start)
    return float(ticks[-1]) if ticks else None


def test_linux_guests(server, api, guests):
    net = api.network.create({"name_label": "kvm-test", "name_description":
                              "", "MTU": "1500", "other_config": {}})
    a = linux_vm(api, guests, "lin-a", "10.77.0.1/24", peer="10.77.0.2",
                 network=net, mac="02:77:00:00:00:01")
    b = linux_vm(api, guests, "lin-b", "10.77.0.2/24", network=net,
                 mac="02:77:00:00:00:02")
    api.VM.start(b, False, False)
    api.VM.start(a, False, False)
    ca, cb = Console(server, api, a), Console(server, api, b)
    ca.wait(b"XAPID-GUEST-READY", 90)
    cb.wait(b"XAPID-GUEST-READY", 90)
    # A pings B through the network's bridge, where one exists (the ovs
    # network backend); with the sim backend taps are not bridged.
    if xapilib_network_is_ovs(server):
        ca.wait(b"PING-OK 10.77.0.2", 90)
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
    assert not qemu_pids(server.state_dir)


def xapilib_network_is_ovs(server):
    return "--network" in server.extra_args and "ovs" in server.extra_args

"""Real QEMU guests of xapid's kvm driver in the e2e tests (and the kvm
benchmarks): building the test guests (tests/fixtures/guests), making a
VM that boots one, and looking at its QEMU from outside (serial log, QMP
run state, processes).

The conftest fixtures `guests` and `linux_guest` build them once per
pytest run."""

import json
import os
import re
import socket
import subprocess
import time

from poollib import wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
GUESTS_SRC = os.path.join(HERE, "..", "fixtures", "guests")
MIB = 1 << 20


def build_tiny(out):
    """The tiny multiboot guests into directory 'out': hello.elf,
    fill.elf and dirty16.elf (build-tiny.sh says what each does)."""
    subprocess.run([os.path.join(GUESTS_SRC, "build-tiny.sh"), out],
                   check=True, capture_output=True)


def build_linux(out):
    """The Linux guest into directory 'out' (vmlinuz, initrd.img): None,
    or why it cannot be built here."""
    built = subprocess.run([os.path.join(GUESTS_SRC, "build-linux.sh"), out],
                           capture_output=True, text=True)
    return None if built.returncode == 0 else built.stderr.strip()


def pv_vm(api, name, kernel, memory, initrd="", args="", platform=None):
    """A halted VM (from the Debian template) that boots 'kernel' directly
    with 'memory' bytes and no disk or NIC."""
    rec = api.VM.get_record(api.VM.get_by_name_label("Debian Bookworm 12")[0])
    m = str(memory)
    rec.update(name_label=name, is_a_template=False, HVM_boot_policy="",
               PV_kernel=kernel, PV_ramdisk=initrd, PV_args=args,
               memory_static_max=m, memory_dynamic_max=m,
               memory_dynamic_min=m, memory_static_min=m,
               other_config={}, platform=platform or {})
    return api.VM.create(rec)


def dom_file(host, api, vm, name):
    """A file of the VM's domain directory on 'host' (a running xapid)."""
    return os.path.join(host.state_dir, "kvm", api.VM.get_uuid(vm), name)


def serial_log(host, api, vm):
    """What the VM wrote to its serial port on 'host' so far."""
    try:
        with open(dom_file(host, api, vm, "serial.log"), "rb") as f:
            return f.read()
    except OSError:
        return b""


def console(host, api, vm, line):
    """Types 'line' on the guest's serial console (its shell) on 'host'."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(dom_file(host, api, vm, "serial.sock"))
        s.sendall(line.encode() + b"\n")
        time.sleep(0.2)


def ask(host, api, vm, tag, cmd, timeout=30):
    """Types 'cmd' on the Linux guest's console (its output between
    "tag-" and "-") until the answer shows, and returns it: a line typed
    while the guest is busy may be lost.  No answer fails with the end
    of the console and QEMU's run state."""
    pat = re.compile(rb"%s-(\w+)-" % tag.encode())
    for _ in range(3):
        console(host, api, vm, "echo %s-$(%s)-" % (tag, cmd))
        try:
            found = wait_for(lambda: pat.findall(serial_log(host, api, vm)),
                             timeout=timeout, interval=0.2)
            return found[-1].decode()
        except AssertionError:
            continue
    raise AssertionError("no %s answer; QEMU says %s; the console ends:\n%s"
                         % (tag, qmp_status(host, api, vm),
                            serial_log(host, api, vm)[-1500:].decode(
                                errors="replace")))


def qmp_status(host, api, vm):
    """The run state QEMU itself reports for the VM's domain on 'host'."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(dom_file(host, api, vm, "qmp.sock"))
        f = s.makefile("rwb")
        f.readline()  # greeting
        for cmd in ("qmp_capabilities", "query-status"):
            f.write(json.dumps({"execute": cmd}).encode() + b"\n")
            f.flush()
            while True:
                r = json.loads(f.readline())
                if "return" in r or "error" in r:
                    break
        return r["return"]["status"]


def qemu_procs(state_dir):
    """(pid, is a zombie) of every QEMU whose command line names
    'state_dir' (the QEMUs of that xapid)."""
    procs = []
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
            procs.append((int(p), zombie))
    return procs


def qemu_pids(state_dir):
    """The pids of the live (not zombie) QEMUs of qemu_procs."""
    return [p for p, zombie in qemu_procs(state_dir) if not zombie]


def on_host(hosts, refs, api, vm):
    """The host of 'hosts' (whose refs are 'refs') the VM resides on."""
    return hosts[refs.index(api.VM.get_resident_on(vm))]


def assert_runs_on(hosts, refs, api, vm, ref):
    """Resident on 'ref' with exactly one QEMU, there, and none elsewhere."""
    assert api.VM.get_resident_on(vm) == ref
    assert api.VM.get_power_state(vm) == "Running"
    for h, r in zip(hosts, refs):
        n = len(qemu_pids(h.state_dir))
        assert n == (1 if r == ref else 0), (h.address, n)


class Console:
    """A VM's text console through CONNECT /console on 'server' (a pool
    host: its address; else 127.0.0.1) with the session of 'api'."""

    def __init__(self, server, api, vm):
        cons = [c for c in api.VM.get_consoles(vm)
                if api.console.get_protocol(c) == "vt100"]
        assert cons, "no vt100 console for a running PV guest"
        addr = getattr(server, "address", "127.0.0.1")
        self.sock = socket.create_connection((addr, server.port))
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

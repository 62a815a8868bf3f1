"""Benchmarks of the kvm hypervisor driver (reported, not asserted).

    XAPID_BIN=build/bin/xapid python3 tests/bench/bench_kvm.py [--runs N]

Measures, through the API: VM.start to the console marker for the tiny
guest (KVM where /dev/kvm opens, else TCG) and for the Linux guest (TCG,
q35), VM.hard_shutdown to Halted, and suspend + resume of a 256 MiB guest
(fill.elf: 224 MiB written); next to each, the same done to a bare
qemu-system-x86_64 in the same run (same machine type, accelerator and
guest, no xapid): launch to the marker, SIGKILL to reaped, and a
migration to a file + an incoming migration from it."""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

import guestlib  # noqa: E402
import xapilib  # noqa: E402
import test_kvm as k  # noqa: E402


def timed_start(server, api, vm, marker):
    t0 = time.monotonic()
    api.VM.start(vm, False, False)
    c = k.Console(server, api, vm)
    c.wait(marker, 120)
    dt = time.monotonic() - t0
    c.close()
    return dt


class RawQemu:
    """A bare QEMU with its serial console on stdout and a QMP socket."""

    def __init__(self, args, workdir, incoming=None):
        self.qmp_path = os.path.join(workdir, "raw-qmp.sock")
        if os.path.exists(self.qmp_path):
            os.unlink(self.qmp_path)
        cmd = ["qemu-system-x86_64", "-nodefaults", "-no-user-config",
               "-display", "none", "-serial", "stdio",
               "-qmp", "unix:%s,server=on,wait=off" % self.qmp_path] + args
        if incoming:
            cmd += ["-incoming", "exec:cat %s" % incoming]
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        self.out = b""

    def wait_output(self, marker, timeout=120):
        deadline = time.monotonic() + timeout
        fd = self.p.stdout.fileno()
        while marker not in self.out:
            assert time.monotonic() < deadline, "raw QEMU: no %r" % marker
            b = os.read(fd, 65536)
            assert b, "raw QEMU exited"
            self.out += b
        return time.monotonic() - self.t0

    def qmp(self, command, **args):
        deadline = time.monotonic() + 30
        while True:
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.qmp_path)
                break
            except OSError:
                s.close()
                assert time.monotonic() < deadline, "raw QEMU: no QMP"
                time.sleep(0.002)
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
        return r.get("return")

    def kill(self):
        """SIGKILL to reaped, in seconds."""
        t0 = time.monotonic()
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()
        self.p.stdout.close()
        return time.monotonic() - t0


def raw_figures(g, runs, linux_runs, accel):
    """The same measurements on bare QEMUs."""
    work = tempfile.mkdtemp(prefix="xapid-rawqemu-")
    tiny = ["-machine", "microvm", "-accel", accel, "-m", "64",
            "-kernel", os.path.join(g["dir"], "hello.elf")]
    starts, kills = [], []
    try:
        for _ in range(runs):
            q = RawQemu(tiny, work)
            starts.append(q.wait_output(b"MB-GUEST-READY"))
            kills.append(q.kill())
        print("raw QEMU tiny guest (%s, microvm): launch -> marker median "
              "%.0f ms (min %.0f, max %.0f); SIGKILL -> reaped median %.1f "
              "ms" % (accel, 1000 * statistics.median(starts),
                      1000 * min(starts), 1000 * max(starts),
                      1000 * statistics.median(kills)))
        fill = ["-machine", "microvm", "-accel", accel, "-m", "256",
                "-kernel", os.path.join(g["dir"], "fill.elf")]
        image = os.path.join(work, "state")
        q = RawQemu(fill, work)
        q.wait_output(b"MB-GUEST-FILLED")
        t0 = time.monotonic()
        q.qmp("stop")
        q.qmp("migrate", uri="exec:cat > %s" % image)
        while q.qmp("query-migrate").get("status") not in ("completed",
                                                           "failed"):
            time.sleep(0.005)
        q.kill()
        t1 = time.monotonic()
        r = RawQemu(fill + ["-S"], work, incoming=image)
        while r.qmp("query-status")["status"] == "inmigrate":
            time.sleep(0.005)
        r.qmp("cont")
        t2 = time.monotonic()
        r.kill()
        print("raw QEMU 256 MiB guest: suspend (stop + migrate to a file) "
              "%.0f ms, resume (incoming from it + cont) %.0f ms"
              % (1000 * (t1 - t0), 1000 * (t2 - t1)))
        if g["linux"]:
            lin = ["-machine", "q35", "-accel", "tcg", "-m", "256",
                   "-kernel", os.path.join(g["dir"], "vmlinuz"),
                   "-initrd", os.path.join(g["dir"], "initrd.img"),
                   "-append", "console=ttyS0 quiet panic=-1"]
            ls = []
            for _ in range(linux_runs):
                q = RawQemu(lin, work)
                ls.append(q.wait_output(b"XAPID-GUEST-READY"))
                q.kill()
            print("raw QEMU Linux guest (tcg, q35): launch -> marker median "
                  "%.2f s over %d runs (min %.2f, max %.2f)"
                  % (statistics.median(ls), len(ls), min(ls), max(ls)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--linux-runs", type=int, default=10)
    ap.add_argument("--no-raw", action="store_true",
                    help="skip the bare-QEMU figures")
    o = ap.parse_args()
    out = tempfile.mkdtemp(prefix="xapid-guests-")
    guestlib.build_tiny(out)
    g = {"dir": out, "linux": guestlib.build_linux(out) is None}
    x = xapilib.Xapid(extra_args=["--hypervisor", "kvm"])
    x.start()
    try:
        api = x.login()
        accel = "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg"
        vm = k.make_vm(api, "bench-tiny", os.path.join(g["dir"], "hello.elf"))
        starts, stops = [], []
        for _ in range(o.runs):
            starts.append(timed_start(x, api, vm, b"MB-GUEST-READY"))
            t0 = time.monotonic()
            api.VM.hard_shutdown(vm)
            stops.append(time.monotonic() - t0)
        print("tiny guest (%s, microvm): VM.start -> marker median %.0f ms "
              "(min %.0f, max %.0f; raw QEMU under KVM: 52 ms)" %
              (accel, 1000 * statistics.median(starts), 1000 * min(starts),
               1000 * max(starts)))
        print("VM.hard_shutdown -> Halted: median %.0f ms" %
              (1000 * statistics.median(stops)))
        big = k.make_vm(api, "bench-fill", os.path.join(g["dir"], "fill.elf"),
                        memory=256 * k.MIB)
        timed_start(x, api, big, b"MB-GUEST-FILLED")
        t0 = time.monotonic()
        api.VM.suspend(big)
        t1 = time.monotonic()
        api.VM.resume(big, False, False)
        t2 = time.monotonic()
        api.VM.hard_shutdown(big)
        print("256 MiB guest (224 MiB written): suspend %.0f ms, resume "
              "%.0f ms" % (1000 * (t1 - t0), 1000 * (t2 - t1)))
        if g["linux"]:
            lin = k.make_vm(api, "bench-linux", os.path.join(g["dir"],
                            "vmlinuz"), os.path.join(g["dir"], "initrd.img"),
                            "console=ttyS0 quiet panic=-1", memory=256 * k.MIB,
                            accel="tcg")
            ls = []
            for _ in range(o.linux_runs):
                ls.append(timed_start(x, api, lin, b"XAPID-GUEST-READY"))
                api.VM.hard_shutdown(lin)
            print("Linux guest (tcg, q35): VM.start -> marker median %.2f s "
                  "over %d runs (min %.2f, max %.2f)" %
                  (statistics.median(ls), len(ls), min(ls), max(ls)))
        if not o.no_raw:
            raw_figures(g, o.runs, o.linux_runs, accel)
    finally:
        x.stop()
        x.cleanup()
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()

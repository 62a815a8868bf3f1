#!/usr/bin/python3
"""Live migration of the 256 MiB dirty16 guest (fills 224 MiB, then
rewrites a 16 MiB working set forever): N migrations back and forth
between two xapid hosts (--hypervisor kvm, 127.0.0.2 and .3, the stream
over xapid's TLS), then N migrations of the same guest between two bare
QEMUs over a unix socket, in the same run.  Medians of QEMU's own
figures (query-migrate: downtime, total-time), the API call's wall time
and, for xapid, the switch: from the source's last byte to the guest
running on the destination (VM.other_config last_migration_switch_ms).

    XA_BUILD_DIR=build python3 tests/bench/bench_migrate_kvm.py [N] [DOWNTIME_MS]

Under TCG (no /dev/kvm) on a loaded machine a tight downtime limit may
never be met: each migration is then given up after LIMIT_S seconds
(raw QEMU: migrate_cancel; xapid: reported as not converged)."""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "e2e"))

import poollib  # noqa: E402
from poollib import wait_for  # noqa: E402

MIB = 1 << 20
LIMIT_S = float(os.environ.get("XA_BENCH_MIGRATE_LIMIT_S", "120"))
GUESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                      "fixtures", "guests")


def accel():
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        return "kvm"
    except OSError:
        return "tcg"


class Qmp:
    def __init__(self, path, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.f = self.s.makefile("rwb")
        self.f.readline()
        self.call("qmp_capabilities")

    def call(self, cmd, **args):
        msg = {"execute": cmd}
        if args:
            msg["arguments"] = args
        self.f.write(json.dumps(msg).encode() + b"\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "error" in r:
                raise RuntimeError("%s: %s" % (cmd, r["error"]))
            if "return" in r:
                return r["return"]

    def close(self):
        self.s.close()


def raw_qemu(d, name, kernel, incoming=None):
    qmp = os.path.join(d, name + ".qmp")
    cmd = ["qemu-system-x86_64", "-nodefaults", "-no-user-config",
           "-machine", "microvm", "-accel", accel(), "-m", "256",
           "-display", "none", "-S", "-kernel", kernel,
           "-chardev", "socket,id=qmp,path=%s,server=on,wait=off" % qmp,
           "-mon", "chardev=qmp,mode=control",
           "-serial", "file:%s" % os.path.join(d, name + ".serial")]
    if incoming:
        cmd += ["-incoming", incoming]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    return p, Qmp(qmp)


def raw_run(n, downtime, kernel):
    d = tempfile.mkdtemp(prefix="xapid-bench-mig-")
    src, q = raw_qemu(d, "q0", kernel)
    procs = [src]
    out = []
    try:
        q.call("cont")
        serial = os.path.join(d, "q0.serial")
        wait_for(lambda: b"MB-GUEST-FILLED" in open(serial, "rb").read(),
                 timeout=120)
        for i in range(n):
            sock = os.path.join(d, "m%d.sock" % i)
            dst, qd = raw_qemu(d, "q%d" % (i + 1), kernel, "unix:" + sock)
            procs.append(dst)
            params = {"max-bandwidth": 1 << 40}
            if downtime:
                params["downtime-limit"] = downtime
            q.call("migrate-set-parameters", **params)
            t0 = time.monotonic()
            q.call("migrate", uri="unix:" + sock)
            while True:
                r = q.call("query-migrate")
                if r.get("status") == "completed":
                    break
                if r.get("status") in ("failed", "cancelled"):
                    raise RuntimeError("raw migration %s" % r)
                if time.monotonic() - t0 > LIMIT_S:
                    q.call("migrate_cancel")
                    r = None
                    break
                time.sleep(0.002)
            if r is None:
                out.append(None)
                dst.kill()
                dst.wait()
                qd.close()
                continue
            while qd.call("query-status")["status"] == "inmigrate":
                time.sleep(0.002)
            qd.call("cont")
            out.append((r["downtime"], r["total-time"], r["ram"]["transferred"],
                        (time.monotonic() - t0) * 1e3))
            q.close()
            src.kill()
            src.wait()
            src, q = dst, qd
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(d, ignore_errors=True)
    return out


def own_session_xapid(d):
    """xapid through 'setsid': each xapid in a session (so a scheduler
    autogroup) of its own, as each QEMU is and as a service would be;
    in the test runner's session its stream relays would share one CPU
    share with the runner and the other host."""
    import xapilib
    real = xapilib.xapid_bin()
    wrapper = os.path.join(d, "xapid")
    with open(wrapper, "w") as f:
        f.write('#!/bin/sh\nexec setsid %s "$@"\n' % real)
    os.chmod(wrapper, 0o755)
    os.environ["XAPID_BIN"] = wrapper


def xapid_run(n, downtime, kernel):
    pool = poollib.Pool()
    out = []
    try:
        hosts = pool.add(2, extra_args=["--hypervisor", "kvm",
                                        "--threads", "16"])
        poollib.join(hosts[1], hosts[0])
        api = hosts[0].login()
        refs = [[h for h in api.host.get_all()
                 if api.host.get_address(h) == x.address][0] for x in hosts]
        wait_for(lambda: all(api.host_metrics.get_live(api.host.get_metrics(h))
                             for h in refs))
        rec = api.VM.get_record(api.VM.get_by_name_label(
            "Debian Bookworm 12")[0])
        m = str(256 * MIB)
        rec.update(name_label="dirty16", is_a_template=False,
                   HVM_boot_policy="", PV_kernel=kernel, PV_ramdisk="",
                   PV_args="", memory_static_max=m, memory_dynamic_max=m,
                   memory_dynamic_min=m, memory_static_min=m,
                   other_config={}, platform={})
        vm = api.VM.create(rec)
        api.VM.start_on(vm, refs[0], False, False)
        serial = os.path.join(hosts[0].state_dir, "kvm", api.VM.get_uuid(vm),
                              "serial.log")
        wait_for(lambda: b"MB-GUEST-FILLED" in open(serial, "rb").read(),
                 timeout=120)
        opts = {"live": "true"}
        if downtime:
            opts["downtime_ms"] = str(downtime)
        for i in range(n):
            dst = refs[(i + 1) % 2]
            t0 = time.monotonic()
            task = api.Async.VM.pool_migrate(vm, dst, opts)
            while api.task.get_status(task) == "pending" and \
                    time.monotonic() - t0 < LIMIT_S:
                time.sleep(0.01)
            if api.task.get_status(task) == "pending":
                out.append(None)
                print("xapid migration %d did not converge in %d s: "
                      "stopping" % (i, LIMIT_S))
                break
            wall = (time.monotonic() - t0) * 1e3
            assert api.task.get_status(task) == "success", \
                api.task.get_error_info(task)
            oc = api.VM.get_other_config(vm)
            out.append((int(oc["last_migration_downtime_ms"]),
                        int(oc["last_migration_total_ms"]),
                        int(oc["last_migration_bytes"]), wall,
                        int(oc["last_migration_switch_ms"])))
        return out
    finally:
        problems = pool.close()
        if problems:
            print("\n".join(problems), file=sys.stderr)


def summary(name, runs):
    done = [r for r in runs if r]
    if not done:
        print("%-6s no migration converged (%d tried)" % (name, len(runs)))
        return
    print("%-6s %2d/%-2d done: downtime median %4d ms (min %d, max %d), "
          "total median %5d ms, wall median %5d ms, %.0f MiB sent median"
          % (name, len(done), len(runs),
             statistics.median(r[0] for r in done),
             min(r[0] for r in done), max(r[0] for r in done),
             statistics.median(r[1] for r in done),
             statistics.median(r[3] for r in done),
             statistics.median(r[2] for r in done) / MIB))
    if len(done[0]) > 4:
        # QEMU's downtime ends when the source sent the last byte; the
        # guest runs on the destination after commit (relay flush, the
        # pool call, "cont" there)
        print("%-6s switch (send end to running there) median %d ms"
              % (name, statistics.median(r[4] for r in done)))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    downtime = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    d = tempfile.mkdtemp(prefix="xapid-bench-guests-")
    try:
        subprocess.run([os.path.join(GUESTS, "build-tiny.sh"), d],
                       check=True, capture_output=True)
        kernel = os.path.join(d, "dirty16.elf")
        if shutil.which("setsid"):
            own_session_xapid(d)
        print("dirty16, 256 MiB, accel %s, downtime limit %s, %d migrations"
              % (accel(), "%d ms" % downtime if downtime else "default", n))
        x = xapid_run(n, downtime, kernel)
        r = raw_run(n, downtime, kernel)
        summary("xapid", x)
        summary("qemu", r)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()

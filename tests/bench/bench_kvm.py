"""Benchmarks of the kvm hypervisor driver (reported, not asserted).

    XAPID_BIN=build/bin/xapid python3 tests/bench/bench_kvm.py [--runs N]

Measures, through the API: VM.start to the console marker for the tiny
guest (KVM where /dev/kvm opens, else TCG) and for the Linux guest (TCG,
q35), VM.hard_shutdown to Halted, and suspend + resume of a 256 MiB guest
(fill.elf: 224 MiB written)."""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--linux-runs", type=int, default=3)
    o = ap.parse_args()
    gen = k.guests.__wrapped__()
    g = next(gen)
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
                  "over %d runs" % (statistics.median(ls), len(ls)))
    finally:
        x.stop()
        x.cleanup()
        try:
            next(gen)
        except StopIteration:
            pass


if __name__ == "__main__":
    main()

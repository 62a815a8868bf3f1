#!/usr/bin/env python3
"""VM lifecycle throughput and memory footprint with the sim hypervisor.

Not a test: prints figures.
  1. 1,000 VMs cloned from a template and provisioned (timed apart),
     then started and hard-shut-down through the API by a few client
     threads on kept-alive connections: the time for all starts plus all
     shutdowns (goal: < 5 s).
  2. xapid's RSS with 10,000 VMs in the database (made with VM.create).

Usage: XAPID_BIN=build/bin/xapid python3 tests/bench/bench_lifecycle.py
       [--vms 1000] [--threads 8] [--records 10000]
"""

import argparse
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

import xapilib  # noqa: E402

MIB = 1 << 20


def parallel(n_threads, items, make_api, fn):
    """Runs fn(api, item) over items on n_threads threads (one kept-alive
    connection each); returns the elapsed seconds."""
    chunks = [items[i::n_threads] for i in range(n_threads)]
    apis = [make_api() for _ in range(n_threads)]
    errors = []

    def run(api, chunk):
        try:
            for it in chunk:
                fn(api, it)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(apis[i], chunks[i]))
               for i in range(n_threads)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.monotonic() - t0
    if errors:
        raise errors[0]
    return dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--records", type=int, default=10000)
    args = ap.parse_args()
    if not xapilib.xapid_bin():
        sys.exit("set XAPID_BIN to a built xapid")
    # Enough simulated memory for every VM at once.
    os.environ["XAPID_SIM_HOST_MEMORY_MB"] = str(4 * 1024 * 1024)
    x = xapilib.Xapid(extra_args=["--threads", str(args.threads * 2),
                                  "--workers", str(args.threads)])
    x.start()
    try:
        api = x.login()
        tmpl = api.VM.get_by_name_label("Debian Bookworm 12")[0]
        login = x.login

        t = time.monotonic()
        vms = []
        lock = threading.Lock()

        def clone(a, i):
            vm = a.VM.clone(tmpl, "bench-%d" % i)
            with lock:
                vms.append(vm)

        parallel(args.threads, list(range(args.vms)), login, clone)
        t_clone = time.monotonic() - t
        t_prov = parallel(args.threads, vms, login,
                          lambda a, vm: a.VM.provision(vm))
        print("clone %d VMs: %.2f s; provision: %.2f s"
              % (args.vms, t_clone, t_prov))

        t_start = parallel(args.threads, vms, login,
                           lambda a, vm: a.VM.start(vm, False, False))
        running = sum(1 for r in api.VM.get_all_records().values()
                      if r["power_state"] == "Running"
                      and not r["is_control_domain"])
        t_stop = parallel(args.threads, vms, login,
                          lambda a, vm: a.VM.hard_shutdown(vm))
        print("start %d VMs: %.2f s (%d running); hard_shutdown: %.2f s"
              % (args.vms, t_start, running, t_stop))
        print("start + shutdown of %d VMs: %.2f s (goal < 5 s), "
              "%d client threads" % (args.vms, t_start + t_stop,
                                     args.threads))

        rec = dict(api.VM.get_record(api.VM.get_by_name_label(
            "Other install media")[0]))
        for k in ("uuid", "metrics", "guest_metrics", "allowed_operations",
                  "current_operations", "consoles", "VBDs", "VIFs"):
            rec.pop(k, None)
        rec["is_a_template"] = False
        rec["other_config"] = {}
        have = len(api.VM.get_all())
        todo = max(0, args.records - have)
        t = time.monotonic()
        parallel(args.threads, list(range(todo)), login,
                 lambda a, i: a.VM.create(dict(rec, name_label="rec-%d" % i)))
        t_create = time.monotonic() - t
        total = len(api.VM.get_all())
        print("VM.create x %d: %.2f s; VMs in the database: %d; "
              "xapid RSS: %.1f MiB" % (todo, t_create, total,
                                       x.rss_kib() / 1024.0))
    finally:
        x.stop()
        x.cleanup()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The largest pool this machine forms: N xapid processes (sim hypervisor,
two HTTP threads each) on 127.0.0.2 ... joined into one pool over TLS,
with M VMs across it.  Prints, as it goes:

- start-up of the hosts, and join time per host (median, max, and how
  it grows with the pool's size);
- resident memory (RSS) of the master and the members, idle and with
  the VMs;
- VM.clone rate on the master alone and in the formed pool (where every
  write is acknowledged only once every live member holds it), VM.start
  rate (placement spreads the
  starts; each runs on its member through the pinned link);
- replication lag: a write on the master seen in a sample of replicas
  (median, max), idle and while other clients write;
- whether every replica holds every write at the end.

    python3 tests/bench/bench_pool_scale.py [--hosts 64] [--vms 10000]
        [--starts 256] [--threads 32] [--vms-first [--pool-vms 200]]
        [--build-dir DIR]

The VMs are cloned in the formed pool; with --vms-first they are made on
the master before the others join (each join then copies the whole
database) and --pool-vms more are cloned in the formed pool.

Benchmarks report; they never fail for being slow.  The exit status is
non-zero only when something could not be measured."""

import argparse
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
E2E = os.path.join(HERE, "..", "e2e")
sys.path.insert(0, E2E)

MIB = 1 << 20


def say(fmt, *args):
    print(fmt % args, flush=True)


def summary(xs, unit=1e3):
    return "median %.1f ms, max %.1f ms" % (statistics.median(xs) * unit,
                                           max(xs) * unit)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=64)
    ap.add_argument("--vms", type=int, default=10000)
    ap.add_argument("--starts", type=int, default=256)
    ap.add_argument("--vms-first", action="store_true",
                    help="make the VMs on the master before the joins")
    ap.add_argument("--pool-vms", type=int, default=200,
                    help="with --vms-first: VMs cloned in the formed pool")
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--build-dir")
    a = ap.parse_args()
    if a.build_dir:
        os.environ["XA_BUILD_DIR"] = os.path.abspath(a.build_dir)
    import poollib  # after XA_BUILD_DIR is known

    # enough room on every host for its share of the VMs
    env = {"XAPID_SIM_HOST_MEMORY_MB": "262144"}
    pool = poollib.Pool()
    try:
        t0 = time.monotonic()
        hosts = poollib.start_hosts(pool, a.hosts, poollib.SCALE_ARGS, env)
        master, members = hosts[0], hosts[1:]
        say("%d hosts started in %.1f s", a.hosts, time.monotonic() - t0)
        rss_idle = [poollib.rss_kib(h.pid) for h in hosts]
        api = master.login()
        vms = []
        if a.vms_first:
            # on the master alone: each join then copies them all
            c0 = time.monotonic()
            vms = poollib.make_vms(api, master.url, a.vms, 64 * MIB,
                                   threads=a.threads)
            dt = time.monotonic() - c0
            say("%d VMs cloned on the master alone in %.1f s (%.0f/s)",
                len(vms), dt, len(vms) / dt)
        joins = []
        for i, m in enumerate(members):
            j0 = time.monotonic()
            poollib.join(m, master)
            joins.append(time.monotonic() - j0)
            if (i + 1) % 16 == 0:
                say("  %d members: last join %.2f s", i + 1, joins[-1])
        say("join per host: median %.2f s, max %.2f s (first %.2f s, "
            "last %.2f s)", statistics.median(joins), max(joins), joins[0],
            joins[-1])
        api = master.login()
        n_hosts = len(api.host.get_all())
        say("pool of %d hosts formed", n_hosts)
        sample = members[:: max(1, len(members) // 8)]
        replicas = [h.local_session() for h in sample]
        probe = poollib.make_vms(api, master.url, 1, 64 * MIB,
                                 prefix="probe")[0]
        lags = poollib.replication_lags(api, replicas, probe, 30)
        say("replication lag, idle (%d replicas sampled): %s",
            len(replicas), summary(lags))

        c0 = time.monotonic()
        more = poollib.make_vms(api, master.url,
                                a.pool_vms if a.vms_first else a.vms,
                                64 * MIB, threads=a.threads, prefix="inpool")
        dt = time.monotonic() - c0
        say("%d VMs cloned in the pool in %.1f s (%.1f/s: each "
            "acknowledged once %d members hold it)", len(more), dt,
            len(more) / dt, len(members))
        vms += more

        # lag while other clients write
        stop = threading.Event()

        def writer(i):
            s = master.login()
            k = 0
            while not stop.is_set():
                s.VM.set_name_description(vms[i], "load-%d" % k)
                k += 1

        ws = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        for w in ws:
            w.start()
        lags = poollib.replication_lags(api, replicas, probe, 30)
        stop.set()
        for w in ws:
            w.join()
        say("replication lag under write load (4 writers): %s",
            summary(lags))

        n = min(a.starts, len(vms))
        s0 = time.monotonic()
        poollib.start_vms(api, master.url, vms[:n], threads=a.threads)
        dt = time.monotonic() - s0
        on = {}
        for vm in vms[:n]:
            h = api.VM.get_resident_on(vm)
            on[h] = on.get(h, 0) + 1
        say("%d VM.start in %.1f s (%.1f/s) over %d hosts (max %d on one)",
            n, dt, n / dt, len(on), max(on.values()))

        want = poollib.vm_digest(master.url, api.ref)
        r0 = time.monotonic()
        behind = 0
        for h in members:
            ok = False
            deadline = time.monotonic() + 60
            while not ok and time.monotonic() < deadline:
                ok = poollib.vm_digest(h.url, h.local_session().ref) == want
                if not ok:
                    time.sleep(0.5)
            behind += 0 if ok else 1
        say("every replica checked in %.1f s: %d of %d hold every write",
            time.monotonic() - r0, len(members) - behind, len(members))
        rss = [poollib.rss_kib(h.pid) for h in hosts]
        say("RSS idle: master %.1f MiB, members median %.1f MiB",
            rss_idle[0] / 1024, statistics.median(rss_idle[1:]) / 1024)
        say("RSS with %d VMs: master %.1f MiB, members median %.1f MiB, "
            "max %.1f MiB, total %.0f MiB", len(want), rss[0] / 1024,
            statistics.median(rss[1:]) / 1024, max(rss[1:]) / 1024,
            sum(rss) / 1024)
        return 0 if behind == 0 else 1
    finally:
        t0 = time.monotonic()
        problems = pool.close(parallel=True)
        say("stopped in %.1f s%s", time.monotonic() - t0,
            "; problems:\n" + "\n".join(p[:2000] for p in problems)
            if problems else "")


if __name__ == "__main__":
    sys.exit(main())

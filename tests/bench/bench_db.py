#!/usr/bin/env python3
"""Committed API writes per second on each persistence backend.

Not a test: prints figures.  Client threads (16 by default), each on a
kept-alive XML-RPC connection and a VM of its own, call VM.set_name_label
for a fixed time (10 s) against a fresh xapid on sqlite (state directory
in /tmp) and on postgresql (a private cluster started here, like the
tests do, or --pg-uri for an existing server: a fresh database is made
there and dropped).  Every call is a committed, durable write: xapid
answers only once the backend has it.

Usage: XAPID_BIN=build/bin/xapid python3 tests/bench/bench_db.py
       [--threads 16] [--seconds 10] [--backends sqlite,postgresql]
       [--pg-uri postgresql://user@host:port/postgres]
"""

import argparse
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

import pg_cluster  # noqa: E402
import xapilib  # noqa: E402


def measure(x, n_threads, seconds):
    s = x.login()
    tmpl = s.VM.get_by_name_label("Other install media")[0]
    base = s.VM.get_record(tmpl)
    base.update(is_a_template=False)
    vms = [s.VM.create(dict(base, name_label="bench-%d" % i))
           for i in range(n_threads)]
    lat = [[] for _ in range(n_threads)]
    errors = []
    start = threading.Barrier(n_threads + 1)
    end_at = [0.0]

    def run(i):
        api = x.api(timeout=30)
        n = 0
        start.wait()
        try:
            while time.monotonic() < end_at[0]:
                n += 1
                t0 = time.monotonic()
                api.call("VM.set_name_label", s.ref, vms[i], "n%d" % n)
                lat[i].append(time.monotonic() - t0)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,))
               for i in range(n_threads)]
    for t in threads:
        t.start()
    end_at[0] = time.monotonic() + seconds
    t0 = time.monotonic()
    start.wait()
    for t in threads:
        t.join()
    dt = time.monotonic() - t0
    if errors:
        raise errors[0]
    all_lat = sorted(v for li in lat for v in li)
    n = len(all_lat)
    return {
        "writes": n,
        "per_s": n / dt,
        "p50_ms": all_lat[n // 2] * 1000 if n else 0,
        "p99_ms": all_lat[min(n - 1, n * 99 // 100)] * 1000 if n else 0,
    }


def run_backend(name, args):
    cluster = None
    old = os.environ.pop("XA_E2E_DB", None)
    try:
        if name == "postgresql":
            uri = args.pg_uri
            if not uri:
                reason = pg_cluster.unavailable()
                if reason:
                    return None, reason
                cluster = pg_cluster.Cluster().start()
                uri = cluster.uri()
            os.environ["XA_E2E_DB"] = uri
        x = xapilib.Xapid(extra_args=["--threads", str(args.threads * 2)])
        try:
            x.start()
            return measure(x, args.threads, args.seconds), None
        finally:
            x.stop()
            x.cleanup()
    finally:
        os.environ.pop("XA_E2E_DB", None)
        if old is not None:
            os.environ["XA_E2E_DB"] = old
        if cluster:
            cluster.destroy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--pg-uri", default=None)
    args = ap.parse_args()
    if not xapilib.xapid_bin():
        sys.exit("no xapid: set XAPID_BIN")
    print("VM.set_name_label, %d client threads, %.0f s each"
          % (args.threads, args.seconds))
    print("%-11s %9s %10s %9s %9s" % ("backend", "writes", "writes/s",
                                      "p50 ms", "p99 ms"))
    for b in args.backends.split(","):
        r, why = run_backend(b, args)
        if r is None:
            print("%-11s skipped: %s" % (b, why))
            continue
        print("%-11s %9d %10.0f %9.2f %9.2f" % (b, r["writes"], r["per_s"],
                                                r["p50_ms"], r["p99_ms"]))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Time to plug 1,000 VIFs through the API on a real Open vSwitch.

1,000 VMs (sim hypervisor) with one VIF each on one network; xapid runs
with --network ovs against a private ovsdb-server + ovs-vswitchd (userspace
datapath, in a network namespace: tests/e2e/ovs_env.py).  Measured, each
over N VIFs, from the client's side:

  start   VM.start of every VM (builds the domain and plugs its VIF port)
  unplug  VIF.unplug of every VIF (removes the port)
  plug    VIF.plug of every VIF (puts the port back)

and checks ovs-vsctl shows N ports afterwards.  Reported, not asserted.

    python3 tests/bench/bench_vifs.py [--vms 1000] [--threads 1]
        (XAPID_BIN or build/bin/xapid; run as root)
"""

import argparse
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

import ovs_env  # noqa: E402
import xapilib  # noqa: E402


def timed(label, n, fn, items, threads):
    chunks = [items[i::threads] for i in range(threads)]
    errors = []

    def work(chunk, sess):
        for it in chunk:
            try:
                fn(sess, it)
            except Exception as e:  # report, keep going
                errors.append(e)

    t0 = time.monotonic()
    ts = [threading.Thread(target=work, args=(c, SERVER.login()))
          for c in chunks]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.monotonic() - t0
    print("%-7s %5d in %7.2f s  %7.2f ms each  %7.0f /s%s"
          % (label, n, dt, 1000 * dt / n, n / dt,
             "  (%d errors: %s)" % (len(errors), errors[0]) if errors else ""))
    return dt


def main():
    global SERVER
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    why = ovs_env.missing()
    if why or not xapilib.xapid_bin():
        print("skipped: %s" % (why or "xapid is not built (XAPID_BIN)"))
        return 77
    env = ovs_env.OvsEnv(nics=0).start()
    SERVER = xapilib.Xapid(extra_args=env.xapid_args())
    try:
        SERVER.start()
        s = SERVER.login()
        net = s.network.create({"name_label": "bench", "name_description": "",
                                "MTU": "1500", "other_config": {},
                                "bridge": ""})
        tmpl = next(r for r, v in s.VM.get_all_records().items()
                    if v["is_a_template"])
        vms, vifs = [], []
        t0 = time.monotonic()
        for i in range(a.vms):
            vm = s.VM.clone(tmpl, "b%d" % i)
            s.VM.set_is_a_template(vm, False)
            s.VM.set_memory_limits(vm, "16777216", "16777216", "16777216",
                                   "16777216")
            vifs.append(s.VIF.create({
                "device": "0", "network": net, "VM": vm, "MAC": "",
                "MTU": "0", "other_config": {}, "qos_algorithm_type": "",
                "qos_algorithm_params": {}}))
            vms.append(vm)
        print("setup: %d VMs with one VIF each in %.1f s"
              % (a.vms, time.monotonic() - t0))
        n = a.vms
        timed("start", n, lambda c, vm: c.VM.start(vm, False, False), vms,
              a.threads)
        bridge = s.network.get_bridge(net)
        have = len(env.ports(bridge))
        print("ports on %s after start: %d" % (bridge, have))
        timed("unplug", n, lambda c, v: c.VIF.unplug(v), vifs, a.threads)
        timed("plug", n, lambda c, v: c.VIF.plug(v), vifs, a.threads)
        have = len(env.ports(bridge))
        print("ports on %s after plug: %d (expected %d)" % (bridge, have, n))
        print("xapid RSS: %d KiB" % SERVER.rss_kib())
    finally:
        SERVER.stop()
        SERVER.cleanup()
        env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

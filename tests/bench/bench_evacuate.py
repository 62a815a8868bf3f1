#!/usr/bin/python3
"""Time host.evacuate of a host running N simulated VMs (default 100)
in a pool of three xapid hosts on loopback.

    XA_BUILD_DIR=build python3 tests/bench/bench_evacuate.py [N] [BATCH]

Prints the evacuation's wall time and per-VM figures; the modelled
downtime of each migration is in the VM's other_config."""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "e2e"))

import poollib  # noqa: E402
from poollib import wait_for  # noqa: E402

MIB = 1 << 20


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    os.environ["XAPID_SIM_HOST_MEMORY_MB"] = "65536"
    pool = poollib.Pool()
    try:
        hosts = pool.add(3, extra_args=["--threads", "16"])
        for m in hosts[1:]:
            poollib.join(m, hosts[0])
        api = hosts[0].login()
        refs = {api.host.get_address(h): h for h in api.host.get_all()}
        a = refs[hosts[0].address]
        wait_for(lambda: all(api.host_metrics.get_live(api.host.get_metrics(h))
                             for h in refs.values()))
        tmpl = api.VM.get_by_name_label("Debian Bookworm 12")[0]
        vms = []
        for i in range(n):
            vm = api.VM.clone(tmpl, "bench-%d" % i)
            api.VM.set_is_a_template(vm, False)
            m = str(128 * MIB)
            api.VM.set_memory_limits(vm, m, m, m, m)
            api.VM.start_on(vm, a, False, False)
            vms.append(vm)
        t0 = time.monotonic()
        api.host.evacuate(a, "OpaqueRef:NULL", str(batch))
        dt = time.monotonic() - t0
        left = [vm for vm in vms if api.VM.get_resident_on(vm) == a]
        assert not left, "%d VMs still on the host" % len(left)
        down = [int(api.VM.get_other_config(vm)["last_migration_downtime_ms"])
                for vm in vms]
        print("evacuated %d VMs (batch %s) in %.3f s: %.1f ms per VM; "
              "modelled downtime median %d ms"
              % (n, batch or "default", dt, dt * 1e3 / n,
                 statistics.median(down)))
    finally:
        problems = pool.close()
        if problems:
            print("\n".join(problems), file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()

"""A CI-sized large pool: 12 hosts (two HTTP threads each) and 1,000
VMs; VM.start spreads over the members, and every replica ends up with
every write.  The full-size run (64 hosts, 10,000 VMs) is
tests/bench/bench_pool_scale.py."""

import collections
import time

import pytest

import poollib
from poollib import wait_for

HOSTS = 12
VMS = 1000
STARTS = 120
MIB = 1 << 20


@pytest.fixture
def pool():
    p = poollib.Pool()
    yield p
    t0 = time.monotonic()
    problems = p.close(parallel=True)
    print("stopped in %.1f s" % (time.monotonic() - t0))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_pool_of_12_with_1000_vms(pool):
    t0 = time.monotonic()
    hosts = poollib.start_hosts(pool, HOSTS, poollib.SCALE_ARGS)
    master, members = hosts[0], hosts[1:]
    joins = []
    for m in members:
        j0 = time.monotonic()
        poollib.join(m, master)
        joins.append(time.monotonic() - j0)
    api = master.login()
    assert len(api.host.get_all()) == HOSTS
    formed = time.monotonic()
    vms = poollib.make_vms(api, master.url, VMS, 64 * MIB, threads=16)
    created = time.monotonic()
    poollib.start_vms(api, master.url, vms[:STARTS], threads=16)
    started = time.monotonic()
    on = collections.Counter(api.VM.get_resident_on(vm)
                             for vm in vms[:STARTS])
    print("formed in %.1f s (join max %.2f s), %d VMs in %.1f s, "
          "%d starts in %.1f s over %d hosts"
          % (formed - t0, max(joins), VMS, created - formed, STARTS,
             started - created, len(on)))
    # placement spreads the starts: every host runs some, none most
    assert len(on) == HOSTS, on
    assert max(on.values()) <= 3 * STARTS // HOSTS, on
    # every replica holds every write
    want = poollib.vm_digest(master.url, api.ref)
    assert len(want) >= VMS

    def replica_matches(h):
        return poollib.vm_digest(h.url, h.local_session().ref) == want

    for h in members:
        wait_for(lambda: replica_matches(h), timeout=20, interval=0.2)
    rss = [poollib.rss_kib(h.pid) for h in hosts]
    print("replicas checked in %.1f s; RSS: master %d MiB, members max %d MiB"
          % (time.monotonic() - started, rss[0] // 1024,
             max(rss[1:]) // 1024))

"""Load soak: a saturating mix of reads, writes, event.from and logins
from CONNECTIONS connections (spread over several client processes, so
the Python clients are not the bottleneck) for a fixed time.  No call may
fail, and the server's resident memory must not grow between the end of
the warm-up and the end of the run beyond RSS_GROWTH_KIB.

The load is steady state by construction: every VM a writer makes it
destroys again, other_config keys come and go, sessions log out, tasks
are destroyed.  So the live data does not grow.  Two things still may:

- the database's deletion log (server/db/db.c), which remembers every
  deleted row for event.from until XA_DB_DELLOG_MAX (1M) entries: a
  32-byte ring slot (the ring grows by doubling, so up to two) plus a
  copy of the ref (a 64-byte malloc chunk), so DELETION_BYTES per row
  deleted, counted by the clients;
- the allocator's high-water mark: xapid sets M_TRIM_THRESHOLD (main.c),
  so freed heap stays mapped, and the warm-up reaches the peak only
  roughly: glibc gives each thread that allocates its own arena (up to 8
  per core) and a call may land on a thread whose arena has not yet seen
  the largest reply (a VM.get_all_records is ~100 KiB here).
  RSS_GROWTH_KIB covers a few arenas' worth of that plus fragmentation.

Measured on 2 cores: reads alone, +0.1 MiB over 230k calls; writes
alone, ~100 bytes per row deleted; the full mix over 10 minutes (512k
calls), +4.7 MiB.  A leak of 100 bytes per call would show as +50 MiB
there, beyond the bound.

CI: DURATION s; XA_LONG=1: LONG_DURATION s (docs/testing.md).  The RSS
check is skipped in a sanitizer build, whose allocator quarantines freed
memory on purpose.
"""

import http.client
import multiprocessing
import os
import random
import sys
import threading
import time
import traceback

import xapilib
from xapilib import XapiError

LONG = os.environ.get("XA_LONG") == "1"
DURATION = 600.0 if LONG else 20.0
WARMUP = 30.0 if LONG else 4.0
PROCESSES = 4
CONNECTIONS = 16  # over PROCESSES processes
RSS_GROWTH_KIB = 16 * 1024
DELETION_BYTES = 128
NULL = "OpaqueRef:NULL"
SUCCESS = b"<name>Status</name><value>Success</value>"


def sanitized_build():
    """True when the xapid under test is built with ASan (XA_SANITIZE)."""
    if os.environ.get("XA_SANITIZE"):
        return True
    cache = os.path.join(xapilib.BUILD_DIR, "CMakeCache.txt")
    try:
        with open(cache) as f:
            for line in f:
                if line.startswith("XA_SANITIZE:"):
                    return bool(line.split("=", 1)[1].strip())
    except OSError:
        pass
    try:
        with open(xapilib.xapid_bin(), "rb") as f:
            return b"__asan_init" in f.read()
    except (OSError, TypeError):
        return False


# ---- one connection's loop -------------------------------------------------


class Worker(threading.Thread):
    def __init__(self, kind, port, password, fixed, deadline, seed):
        super().__init__(daemon=True)
        self.kind = kind
        self.api = xapilib.Api("http://127.0.0.1:%d/" % port, timeout=60)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.password = password
        self.fixed = fixed  # base record, network, host, stable VMs
        self.deadline = deadline
        self.rnd = random.Random(seed)
        self.calls = 0
        self.deleted = 0  # database rows this client deleted
        self.failures = []

    def call(self, method, *args):
        self.calls += 1
        return self.api.call(method, self.sref, *args)

    def fast(self, method, *args):
        """A call whose answer only has to be a success: the reply is not
        decoded, so the client spends its time asking, not parsing (a
        VM.get_all_records costs Python's XML-RPC decoder ~20 ms)."""
        self.calls += 1
        body = xapilib.xml_call_body(method, self.sref, *args)
        self.conn.request("POST", "/", body, {"Content-Type": "text/xml"})
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200 or SUCCESS not in data[:200]:
            raise AssertionError("%s: HTTP %d %r" % (method, r.status,
                                                     data[:600]))

    def run(self):
        try:
            self.sref = self.api.call("session.login_with_password", "root",
                                      self.password)
            loop = getattr(self, "loop_" + self.kind)
            while time.monotonic() < self.deadline:
                loop()
            self.api.call("session.logout", self.sref)
            self.deleted += 1
        except Exception as e:  # every failure is a finding
            detail = e.details if isinstance(e, XapiError) else \
                traceback.format_exc(limit=3)
            self.failures.append("%s: %s" % (self.kind, detail))

    def loop_read(self):
        # not a VM a writer may be destroying right now
        vm = self.rnd.choice(self.fixed["vms"])
        self.fast("VM.get_all_records")
        self.fast("VM.get_record", vm)
        self.fast("VM.get_power_state", vm)
        self.fast("VM.get_all_records_where", 'field "power_state" = "Halted"')
        self.fast("VM.get_all")
        self.fast("host.get_record", self.fixed["host"])
        self.fast("pool.get_all_records")
        self.fast("session.get_record", self.sref)

    def loop_write(self):
        tag = "soak-%d" % self.rnd.randrange(1 << 40)
        vm = self.call("VM.create", dict(self.fixed["base"], name_label=tag))
        for i in range(3):
            self.fast("VM.set_name_label", vm, "%s-%d" % (tag, i))
        self.fast("VM.add_to_other_config", vm, "soak", tag)
        self.fast("VM.get_record", vm)
        self.fast("VM.remove_from_other_config", vm, "soak")
        self.fast("VBD.create", {
            "VM": vm, "VDI": NULL, "userdevice": "autodetect",
            "bootable": False, "mode": "RO", "type": "CD", "empty": True,
            "other_config": {}, "qos_algorithm_type": "",
            "qos_algorithm_params": {}})
        self.fast("VIF.create", {
            "device": "0", "network": self.fixed["net"], "VM": vm, "MAC": "",
            "MTU": "1500", "other_config": {}, "qos_algorithm_type": "",
            "qos_algorithm_params": {}})
        if self.rnd.random() < 0.3:
            # through a task, which is then destroyed
            task = self.call("Async.VM.destroy", vm)
            t_end = time.monotonic() + 30
            while self.call("task.get_status", task) == "pending":
                if time.monotonic() > t_end:
                    raise AssertionError("task %s still pending" % task)
                time.sleep(0.01)
            status = self.call("task.get_status", task)
            if status != "success":
                raise AssertionError("Async.VM.destroy: %s %s" % (
                    status, self.call("task.get_error_info", task)))
            self.fast("task.destroy", task)
            self.deleted += 1
        else:
            self.fast("VM.destroy", vm)
        self.deleted += 4  # the VM, its VM_metrics, the VBD and the VIF

    def loop_events(self):
        if not hasattr(self, "token"):
            self.token = ""
        r = self.call("event.from", ["vm", "vbd", "vif", "task"], self.token,
                      1.0)
        self.token = r["token"]

    def loop_login(self):
        s = self.api.call("session.login_with_password", "root",
                          self.password)
        self.calls += 1
        self.api.call("pool.get_all", s)
        self.api.call("session.logout", s)
        self.calls += 2
        self.deleted += 1
        self.fast("session.get_all_subject_identifiers")


KINDS = ["read"] * 6 + ["write"] * 6 + ["events"] * 3 + ["login"]


def client_process(kinds, port, password, fixed, deadline, seed, out):
    """Runs one thread per kind until 'deadline'; puts (calls, rows
    deleted, failures)."""
    ws = [Worker(k, port, password, fixed, deadline, seed + i)
          for i, k in enumerate(kinds)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    out.put((sum(w.calls for w in ws), sum(w.deleted for w in ws),
             [f for w in ws for f in w.failures]))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_soak(xapid_factory):
    assert len(KINDS) == CONNECTIONS
    x = xapid_factory.start()
    s = x.login()
    tmpl = s.VM.get_by_name_label("Other install media")[0]
    base = s.VM.get_record(tmpl)
    for k in ("uuid", "allowed_operations", "current_operations", "consoles",
              "VBDs", "VIFs", "metrics", "guest_metrics"):
        base.pop(k, None)
    base.update(is_a_template=False, other_config={})
    nets = s.network.get_all()
    net = nets[0] if nets else s.network.create({
        "name_label": "soak net", "name_description": "", "MTU": "1500",
        "other_config": {}, "bridge": "xenbr9", "managed": True, "tags": []})
    vms = s.VM.get_all()
    fixed = {"base": base, "net": net, "host": s.host.get_all()[0],
             "vms": sorted(vms)}

    t0 = time.monotonic()
    deadline = t0 + WARMUP + DURATION
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = []
    for p in range(PROCESSES):
        kinds = KINDS[p::PROCESSES]
        procs.append(ctx.Process(target=client_process, args=(
            kinds, x.port, x.password, fixed, deadline, 1000 * p, out)))
    for p in procs:
        p.start()
    time.sleep(WARMUP)
    rss_start = x.rss_kib()
    cpu_start = cpu_seconds(x.pid)
    rss_max = rss_start
    while time.monotonic() < deadline - 1.0:
        time.sleep(min(1.0, max(0.0, deadline - 1.0 - time.monotonic())))
        rss_max = max(rss_max, x.rss_kib())
    rss_end = x.rss_kib()
    cpu = cpu_seconds(x.pid) - cpu_start
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    calls = sum(r[0] for r in results)
    deleted = sum(r[1] for r in results)
    failures = [f for r in results for f in r[2]]
    elapsed = time.monotonic() - t0
    # deletions before the warm-up ended are in rss_start already: the
    # allowance overestimates, which only makes the bound looser
    bound = RSS_GROWTH_KIB + deleted * DELETION_BYTES // 1024

    summary = ("soak: %.0f s (%.0f warm-up), %d calls (%.0f/s), xapid CPU "
               "%.0f%% of one core after warm-up, RSS %d KiB after warm-up, "
               "%d KiB at the end (max %d, growth %+d KiB, bound %d KiB "
               "with %d rows deleted)"
               % (elapsed, WARMUP, calls, calls / elapsed,
                  100.0 * cpu / max(DURATION - 1.0, 1.0), rss_start, rss_end,
                  rss_max, rss_end - rss_start, bound, deleted))
    print(summary, file=sys.stderr)
    assert not failures, failures[:10]
    assert calls > 0
    # steady state: the writers left nothing behind
    assert sorted(s.VM.get_all()) == sorted(vms)
    assert x.alive()
    if not sanitized_build():
        assert rss_end - rss_start <= bound, summary

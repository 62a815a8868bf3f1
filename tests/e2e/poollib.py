"""Pools of real xapid processes for the e2e tests.

Each host is a xapid bound to its own loopback address (127.0.0.2,
127.0.0.3, ...: the whole of 127.0.0.0/8 answers on Linux) on ports that
every host of the pool shares, as real hosts share 443: a host reaches
another at https://<its management address>:<the HTTPS port>."""

import os
import socket
import subprocess
import threading
import time
import xmlrpc.client

import xapilib

HEARTBEAT = "0.2"
# Sanitizer builds run several times slower: a host busy under ASan must
# not be declared dead while it works.
LIVE_TIMEOUT = "6" if os.environ.get("XA_SANITIZE") else "1.5"


def _port_free_everywhere(port, addrs):
    for a in addrs:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((a, port))
            except OSError:
                return False
    return True


def shared_ports(addrs):
    """An (http, https) pair free on every address."""
    while True:
        http, https = xapilib.free_port(), xapilib.free_port()
        if http != https and _port_free_everywhere(http, addrs) \
                and _port_free_everywhere(https, addrs):
            return http, https


class PoolHost(xapilib.Xapid):
    """A xapid on 'address' with the pool's shared ports."""

    def __init__(self, address, http_port, https_port, extra_args=(),
                 env=None):
        super().__init__(https=True, extra_args=[
            "--pool-heartbeat", HEARTBEAT,
            "--pool-live-timeout", LIVE_TIMEOUT] + list(extra_args))
        self.address = address
        self.fixed = (http_port, https_port)
        # extra environment (e.g. XAPID_SIM_DELAY_MS) for this host only
        self.env = dict(env or {})

    @property
    def url(self):
        return "http://%s:%d/" % (self.address, self.port)

    def command(self):
        cmd = super().command()
        cmd[cmd.index("--bind") + 1] = self.address
        return cmd

    def start(self):
        assert self.proc is None, "already running"
        self.starts += 1
        self.port, self.https_port = self.fixed
        self.stderr_path = os.path.join(self.workdir,
                                        "xapid-%d.stderr" % self.starts)
        env = dict(os.environ, **self.env) if self.env else None
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.command(),
                                         stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err, env=env)
        self.wait_answering()
        return self

    def wait_answering(self, timeout=xapilib.START_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                raise RuntimeError("xapid exited with %d:\n%s"
                                   % (rc, self.stderr_text()))
            try:
                r = xapilib.Api(self.url, timeout=5).proxy.system.listMethods()
                if isinstance(r, list) and r:
                    return
            except (OSError, xmlrpc.client.Error) as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError("%s did not answer (%r):\n%s"
                           % (self.address, last, self.stderr_text()))

    def local_session(self):
        """slave_local_login_with_password: reads this host's replica."""
        api = xapilib.Api(self.url, timeout=30)
        r = api.raw("session.slave_local_login_with_password", "root",
                    self.password)
        assert r["Status"] == "Success", r
        return xapilib.Session(api, r["Value"])


class Pool:
    """Starts hosts on 127.0.0.2, .3, ... and stops them all at the end."""

    def __init__(self):
        self.hosts = []
        self.ports = None

    def add(self, n=1, extra_args=(), env=None, max_hosts=8):
        """Starts n more hosts; 'max_hosts' is how many addresses the
        shared ports are checked on when the first hosts start."""
        first = len(self.hosts)
        addrs = ["127.0.0.%d" % (i + 2) for i in range(first, first + n)]
        if self.ports is None:
            self.ports = shared_ports(["127.0.0.%d" % (i + 2)
                                       for i in range(max(8, max_hosts))])
        out = []
        for a in addrs:
            h = PoolHost(a, self.ports[0], self.ports[1], extra_args, env)
            self.hosts.append(h)
            h.start()
            out.append(h)
        return out

    def close(self, parallel=False):
        """Stops every host (the members all at once when 'parallel', then
        the master); one text per host that did not stop cleanly."""
        problems = []

        def stop(h):
            if h.proc is not None:
                alive = h.alive()
                rc = h.stop()
                if not alive or rc != 0:
                    problems.append("%s: rc=%r\n%s"
                                    % (h.address, rc, h.stderr_text()))
            h.cleanup()

        if parallel:
            # the members together, then the first host (the master)
            threads = [threading.Thread(target=stop, args=(h,))
                       for h in self.hosts[1:]]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for h in self.hosts[:1]:
                stop(h)
        else:
            for h in self.hosts:
                stop(h)
        return problems


def wait_for(fn, timeout=10.0, interval=0.02):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
            last = v
        except (xapilib.XapiError, OSError, xmlrpc.client.Error) as e:
            last = e
        time.sleep(interval)
    raise AssertionError("timed out; last: %r" % (last,))


def join(member, master):
    s = member.login()
    s.pool.join(master.address, "root", master.password)
    # the member's replica holds the master's pool once the copy is in
    wait_for(lambda: len(member.local_session().host.get_all()) >= 2)


# ---- large pools (test_pool_scale.py, tests/bench/bench_pool_scale.py)

# Many hosts share two cores: few threads each, and a heartbeat and live
# timeout that a busy machine keeps up with.
SCALE_ARGS = ["--threads", "2", "--workers", "2",
              "--pool-heartbeat", "1", "--pool-live-timeout", "20"]


def start_hosts(pool, n, extra_args=(), env=None, parallel=8):
    """Adds n hosts to 'pool', starting up to 'parallel' at once."""
    first = len(pool.hosts)
    if pool.ports is None:
        pool.ports = shared_ports(["127.0.0.%d" % (i + 2)
                                   for i in range(first + n)])
    hosts = [PoolHost("127.0.0.%d" % (i + 2), pool.ports[0], pool.ports[1],
                      extra_args, env) for i in range(first, first + n)]
    pool.hosts.extend(hosts)
    errors = []

    def run(chunk):
        for h in chunk:
            try:
                h.start()
            except Exception as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

    chunks = [hosts[i::parallel] for i in range(parallel)]
    threads = [threading.Thread(target=run, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return hosts


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_parallel(fn, items, threads=8):
    """fn(item) for every item from 'threads' threads; the results in
    order (an exception is re-raised)."""
    out = [None] * len(items)
    errors = []
    lock = threading.Lock()
    it = iter(enumerate(items))

    def worker():
        while True:
            with lock:
                try:
                    i, item = next(it)
                except StopIteration:
                    return
            try:
                out[i] = fn(item)
            except Exception as e:  # noqa: BLE001 - re-raised below
                errors.append(e)
                return

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return out


class ThreadSessions:
    """One XML-RPC connection per thread on one session (Api objects are
    not thread safe)."""

    def __init__(self, url, ref):
        self.url = url
        self.ref = ref
        self.local = threading.local()

    def get(self):
        s = getattr(self.local, "s", None)
        if s is None:
            s = xapilib.Session(xapilib.Api(self.url, timeout=120), self.ref)
            self.local.s = s
        return s


def make_vms(master_session, url, n, memory, threads=8, prefix="scale"):
    """n halted diskless VMs of 'memory' bytes, cloned in parallel."""
    api = master_session
    tpl = api.VM.get_by_name_label("Debian Bookworm 12")[0]
    base = api.VM.clone(tpl, "%s-base" % prefix)
    api.VM.set_is_a_template(base, False)
    m = str(memory)
    api.VM.set_memory_limits(base, m, m, m, m)
    ts = ThreadSessions(url, api.ref)
    rest = run_parallel(
        lambda i: ts.get().VM.clone(base, "%s-%d" % (prefix, i)),
        list(range(1, n)), threads)
    return [base] + rest


def start_vms(master_session, url, vms, threads=8):
    ts = ThreadSessions(url, master_session.ref)
    run_parallel(lambda vm: ts.get().VM.start(vm, False, False), vms,
                 threads)


def replication_lags(api, replicas, vm, rounds):
    """Seconds from a write's answer on the master to its arrival in
    every replica, per write."""
    lags = []
    for i in range(rounds):
        label = "lag-%d" % i
        t0 = time.monotonic()
        api.VM.set_name_label(vm, label)
        for r in replicas:
            wait_for(lambda: r.VM.get_name_label(vm) == label,
                     timeout=10, interval=0.001)
        lags.append(time.monotonic() - t0)
    return lags


def jsonrpc(url, method, *params, timeout=60):
    """One JSON-RPC call (decodes large answers far faster than
    xmlrpc.client); the result, or XapiError."""
    import json
    import urllib.request
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                       "params": list(params)}).encode()
    req = urllib.request.Request(url.rstrip("/") + "/jsonrpc", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        answer = json.loads(r.read())
    if "error" in answer and answer["error"]:
        e = answer["error"]
        raise xapilib.XapiError([e.get("message", "")] + e.get("data", []))
    return answer["result"]


def vm_digest(url, session_ref, fields=("name_label", "power_state",
                                        "resident_on")):
    """{VM ref: (fields...)} from one host's database."""
    recs = jsonrpc(url, "VM.get_all_records", session_ref)
    return {ref: tuple(r[f] for f in fields) for ref, r in recs.items()}

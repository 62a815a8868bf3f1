#!/usr/bin/env python3
"""Runs every xapid benchmark and prints (and saves) a table.

    python3 tests/bench/run.py [--quick] [--big] [--build-dir DIR] [--out FILE]

Builds xapid (cmake target only) and the two bench programs (cc, into
BUILD_DIR/bench/), starts a fresh xapid (sim hypervisor, SQLite state in a
temporary directory, plain HTTP on loopback) and the libmicrohttpd
"ceiling" server, then measures:

- trivial call (session.get_this_host) at 1 and 16 connections,
- VM.get_record at 1 and 16 connections,
- host.get_all over JSON-RPC at 1 and 16 connections,
  each against the ceiling in interleaved rounds (ceiling, xapid, ...),
  medians reported;
- VM.get_all_records wall time with 100, 1,000 and 10,000 VMs (and the
  ceiling sending a body of the same size), VM.create rate;
- xapid's resident memory at start, with 10,000 VMs and (--big) 100,000.

Benchmarks report; they never fail for being slow.  The exit status is
non-zero only when something could not be measured (a server would not
start, a response was wrong).  Only the Python standard library is used.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.path.join(HERE, "..", ".."))
CFLAGS = ["-O2", "-g", "-std=gnu11", "-Wall", "-Wextra", "-Werror",
          "-pthread"]
XML_MARKER = "<name>Status</name><value>Success</value>"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- building ------------------------------------------------------------


def newer(target, *sources):
    if not os.path.exists(target):
        return True
    t = os.path.getmtime(target)
    return any(os.path.getmtime(s) > t for s in sources)


def pkg_config(*args):
    try:
        out = subprocess.run(["pkg-config"] + list(args), check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.split()


def build_tools(build_dir):
    """Compiles xa-load and ceiling with cc; returns their paths."""
    out_dir = os.path.join(build_dir, "bench")
    os.makedirs(out_dir, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    load = os.path.join(out_dir, "xa-load")
    ceiling = os.path.join(out_dir, "ceiling")
    src = os.path.join(HERE, "xa-load.c")
    if newer(load, src):
        log("building %s" % load)
        subprocess.run([cc] + CFLAGS + ["-o", load, src], check=True)
    src = os.path.join(HERE, "ceiling.c")
    if newer(ceiling, src):
        mhd = pkg_config("--cflags", "--libs", "libmicrohttpd")
        if mhd is None:
            mhd = ["-lmicrohttpd"]
        log("building %s" % ceiling)
        subprocess.run([cc] + CFLAGS + ["-o", ceiling, src] + mhd,
                       check=True)
    return load, ceiling


def build_peer_tools(build_dir):
    """Compiles xa-pairs and (with libvirt's headers) libvirt-peer; the
    latter's path is None when libvirt-dev is missing."""
    out_dir = os.path.join(build_dir, "bench")
    cc = os.environ.get("CC", "cc")
    pairs = os.path.join(out_dir, "xa-pairs")
    src = os.path.join(HERE, "xa-pairs.c")
    if newer(pairs, src):
        log("building %s" % pairs)
        subprocess.run([cc] + CFLAGS + ["-o", pairs, src], check=True)
    peer = os.path.join(out_dir, "libvirt-peer")
    src = os.path.join(HERE, "libvirt-peer.c")
    lv = pkg_config("--cflags", "--libs", "libvirt")
    if lv is None:
        log("libvirt-dev (pkg-config libvirt) missing: no peer benchmark")
        return pairs, None
    if newer(peer, src):
        log("building %s" % peer)
        subprocess.run([cc] + CFLAGS + ["-o", peer, src] + lv, check=True)
    return pairs, peer


def build_xapid(build_dir, skip):
    xapid = os.path.join(build_dir, "bin", "xapid")
    if skip:
        if not os.access(xapid, os.X_OK):
            sys.exit("run.py: %s is not built (drop --no-build)" % xapid)
        return xapid
    if not os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
        log("configuring %s" % build_dir)
        subprocess.run(["cmake", "-S", SOURCE_DIR, "-B", build_dir,
                        "-DCMAKE_BUILD_TYPE=" +
                        os.environ.get("BUILD_TYPE", "RelWithDebInfo")],
                       check=True, stdout=subprocess.DEVNULL)
    log("building xapid in %s" % build_dir)
    p = subprocess.run(["cmake", "--build", build_dir, "--target", "xapid",
                        "-j%d" % (os.cpu_count() or 1)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True)
    if p.returncode != 0:
        if not os.access(xapid, os.X_OK):
            sys.exit("run.py: building xapid failed:\n%s" % p.stderr)
        # Someone's change in progress should not stop a measurement of
        # the last good build; say so loudly.
        log("WARNING: building xapid failed; measuring the existing %s "
            "(built %s):\n%s" % (xapid, time.ctime(os.path.getmtime(xapid)),
                                 p.stderr.strip()[-600:]))
    return xapid


# ---- the servers ---------------------------------------------------------


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit("run.py: %s exited early (rc=%s)" % (what, proc.returncode))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit("run.py: %s did not listen on port %d" % (what, port))


def stop(proc, timeout=15.0):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Ceiling:
    """The ceiling server; it answers with 'body_xml' / 'body_json' when
    given, else with a small fixed XML-RPC struct / JSON-RPC result."""

    def __init__(self, binary, body_xml=None, body_json=None):
        self.port = free_port()
        args = [binary, "--port", str(self.port)]
        if body_xml:
            args += ["--body-xml", body_xml]
        if body_json:
            args += ["--body-json", body_json]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        wait_port(self.port, self.proc, "ceiling")

    def close(self):
        stop(self.proc)


class Xapid:
    def __init__(self, binary, workdir):
        self.port = free_port()
        self.state = os.path.join(workdir, "state")
        pwfile = os.path.join(workdir, "root-password")
        self.password = "bench-%d" % os.getpid()
        with open(pwfile, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(self.password + "\n")
        self.logf = open(os.path.join(workdir, "xapid.log"), "wb")
        self.proc = subprocess.Popen(
            [binary, "--state-dir", self.state, "--bind", "127.0.0.1",
             "--http-port", str(self.port), "--https-port", "0",
             "--root-password-file", pwfile, "--log-level", "warn"],
            stdout=self.logf, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, "xapid")
        self.url = "http://127.0.0.1:%d/" % self.port
        self.api = xmlrpc.client.ServerProxy(self.url, allow_none=True)
        try:
            self.session = self.call("session.login_with_password", "root",
                                     self.password)
        except BaseException:  # sys.exit included: do not leave it running
            self.close()
            raise

    def call(self, method, *args):
        r = getattr(self.api, method)(*args)
        if r.get("Status") != "Success":
            sys.exit("run.py: %s failed: %r" % (method, r))
        return r["Value"]

    def rss_kib(self):
        """VmRSS and VmHWM of the server, in KiB."""
        out = {}
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0])
        return out

    def close(self):
        stop(self.proc)
        self.logf.close()


class Libvirtd:
    """A private libvirtd (session mode, qemu driver) for the peer
    benchmark: its own socket, configuration, state and logs under a
    temporary directory, removed on close.  As root it runs as 'nobody',
    so that it is a session daemon and leaves the system's libvirt alone;
    no domain is ever started."""

    def __init__(self, workdir, peer):
        self.proc = None
        self.peer = peer
        self.dir = os.path.join(workdir, "libvirt")
        run_dir = os.path.join(self.dir, "run")
        for d in ("run", "home", "config", "cache"):
            os.makedirs(os.path.join(self.dir, d))
        self.sock = os.path.join(run_dir, "libvirt-sock")
        self.uri = "qemu+unix:///session?socket=" + self.sock
        conf = os.path.join(self.dir, "libvirtd.conf")
        with open(conf, "w") as f:
            f.write('unix_sock_dir = "%s"\n' % run_dir)
            f.write('unix_sock_rw_perms = "0777"\n')
            f.write('log_outputs = "3:file:%s"\n' %
                    os.path.join(self.dir, "libvirtd.log"))
        env = {"HOME": os.path.join(self.dir, "home"),
               "XDG_RUNTIME_DIR": run_dir,
               "XDG_CONFIG_HOME": os.path.join(self.dir, "config"),
               "XDG_CACHE_HOME": os.path.join(self.dir, "cache"),
               "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        args = [shutil.which("libvirtd") or "/usr/sbin/libvirtd", "-f", conf]
        if os.geteuid() == 0:
            os.chmod(workdir, 0o755)
            for root, dirs, files in os.walk(self.dir):
                for n in dirs + files:
                    os.chown(os.path.join(root, n), 65534, 65534)
            os.chown(self.dir, 65534, 65534)
            args = ["setpriv", "--reuid=65534", "--regid=65534",
                    "--clear-groups"] + args
        self.logf = open(os.path.join(workdir, "libvirtd.out"), "wb")
        self.proc = subprocess.Popen(args, env=env, cwd=self.dir,
                                     stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        end = time.monotonic() + 30
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("libvirtd did not start (see %s)" %
                                   self.logf.name)
            time.sleep(0.1)

    def run(self, *args, timeout=900):
        p = subprocess.run([self.peer, self.uri] + [str(a) for a in args],
                           capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError("libvirt-peer %s: %s" %
                               (args[0], p.stderr.strip()))
        return json.loads(p.stdout)

    def close(self):
        if self.proc is None:
            return
        try:
            self.run("clean", timeout=300)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            log("libvirt cleanup: %s" % e)
        stop(self.proc)
        self.logf.close()
        self.proc = None


def start_libvirtd(workdir, peer):
    """The private libvirtd, or None (with the reason logged)."""
    if peer is None:
        return None, "libvirt-dev missing"
    if not shutil.which("libvirtd") and not os.path.exists(
            "/usr/sbin/libvirtd"):
        return None, "libvirtd not installed (libvirt-daemon)"
    try:
        return Libvirtd(workdir, peer), None
    except (OSError, RuntimeError) as e:
        return None, str(e)


def vm_record(name):
    """A full VM.create record (every field without a schema default)."""
    gib = str(1 << 30)
    return {
        "name_label": name, "name_description": "xapid benchmark VM",
        "user_version": "1", "is_a_template": False,
        "affinity": "OpaqueRef:NULL",
        "memory_static_max": gib, "memory_dynamic_max": gib,
        "memory_dynamic_min": gib, "memory_static_min": gib,
        "VCPUs_params": {}, "VCPUs_max": "1", "VCPUs_at_startup": "1",
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart", "actions_after_crash": "restart",
        "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "",
        "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "",
        "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": {"order": "cd"},
        "platform": {"acpi": "1", "apic": "true", "pae": "true"},
        "PCI_bus": "", "other_config": {"bench": "true"},
        "recommendations": "",
    }


# ---- running the load generator -----------------------------------------


class Bench:
    def __init__(self, load, workdir):
        self.load = load
        self.workdir = workdir
        self.bodies = {}
        self.failures = []

    def body(self, name, data):
        path = os.path.join(self.workdir, name)
        with open(path, "w") as f:
            f.write(data)
        self.bodies[name] = path
        return path

    def run(self, port, body, path="/", conns=1, duration=None,
            requests=None, warmup=0.0, limit=None):
        args = [self.load, "-p", str(port), "-P", path, "-b", body,
                "-c", str(conns), "-j"]
        if requests:
            args += ["-n", str(requests)]
            if limit:
                args += ["-d", str(limit)]
        else:
            args += ["-d", str(duration), "-w", str(warmup)]
        p = subprocess.run(args, capture_output=True, text=True)
        if p.returncode not in (0, 1) or not p.stdout.strip():
            sys.exit("run.py: xa-load failed (rc=%d): %s" %
                     (p.returncode, p.stderr.strip()))
        r = json.loads(p.stdout)
        if r["errors"]:
            msg = "%s on port %d: %d bad responses: %s" % (
                os.path.basename(body), port, r["errors"],
                p.stderr.strip()[:300])
            log("WARNING: " + msg)
            self.failures.append(msg)
        return r


def add_rows(rows, label, conns, r):
    rows.append((
        "%s, %d conn (req/s)" % (label, conns),
        fmt_num(r["xapid"]["rps"]),
        fmt_num(r["ceiling"]["rps"]),
        "%.2f" % r["ratio"] if r["ratio"] else "-"))
    rows.append((
        "  p50 / p99 latency (ms)",
        "%.3f / %.3f" % (r["xapid"]["p50_ms"], r["xapid"]["p99_ms"]),
        "%.3f / %.3f" % (r["ceiling"]["p50_ms"], r["ceiling"]["p99_ms"]),
        ""))


def median(xs):
    return statistics.median(xs) if xs else None


def compare(bench, ceiling, xapid, body, path, conns, rounds, duration,
            warmup):
    """Interleaved rounds, ceiling then xapid; medians of each."""
    runs = {"ceiling": [], "xapid": []}
    for _ in range(rounds):
        for name, port in (("ceiling", ceiling.port), ("xapid", xapid.port)):
            runs[name].append(bench.run(port, body, path, conns,
                                        duration=duration, warmup=warmup))
    out = {}
    for name, rs in runs.items():
        out[name] = {
            "rps": median([r["rps"] for r in rs]),
            "p50_ms": median([r["lat_ms"]["p50"] for r in rs]),
            "p99_ms": median([r["lat_ms"]["p99"] for r in rs]),
            "best_rps": max(r["rps"] for r in rs),
            "rounds_rps": [round(r["rps"], 1) for r in rs],
        }
    out["ratio"] = (out["xapid"]["rps"] / out["ceiling"]["rps"]
                    if out["ceiling"]["rps"] else None)
    out["connections"] = conns
    return out


def create_vms(bench, xapid, body, target, have, limit=None):
    """Brings the VM count from 'have' to 'target' with VM.create calls
    on 4 connections; returns (count now, creates per second)."""
    n = target - have
    if n <= 0:
        return have, None
    r = bench.run(xapid.port, body, "/", conns=4, requests=n, limit=limit)
    # Ask rather than add up: a create cut off by the time limit may still
    # have been committed.
    return len(xapid.call("VM.get_all", xapid.session)), r["rps"]


def time_get_all_records(bench, port, body, calls):
    """Median wall time (ms) of 'calls' sequential calls, after one
    unmeasured call; and the response size."""
    bench.run(port, body, "/", conns=1, requests=1)
    r = bench.run(port, body, "/", conns=1, requests=calls)
    return r["lat_ms"]["p50"], r["lat_ms"]["min"], r["response_bytes"]


def fetch(port, body_path, out_path, path="/"):
    """POSTs a body once and saves the response body."""
    import http.client
    ctype = "application/json" if path.endswith("jsonrpc") else "text/xml"
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    with open(body_path, "rb") as f:
        c.request("POST", path, f.read(), {"Content-Type": ctype})
    data = c.getresponse().read()
    c.close()
    with open(out_path, "wb") as f:
        f.write(data)
    return len(data)


def peer_compare(bench, xapid, lv, pairs_bin, bodies, rounds, duration,
                 warmup, calls):
    """libvirtd (1,000 defined domains) against xapid (1,000 VMs), in
    interleaved rounds, one connection each: a record read, the whole
    list, and create + delete pairs.  Medians of the rounds."""
    get_record, gar, create = bodies
    runs = {k: [] for k in ("lv_info", "xa_rec", "lv_list", "xa_gar",
                            "lv_pairs", "xa_pairs")}
    for _ in range(rounds):
        runs["lv_info"].append(lv.run("getinfo", duration, warmup))
        runs["xa_rec"].append(bench.run(xapid.port, get_record, "/", 1,
                                        duration=duration, warmup=warmup))
        runs["lv_list"].append(lv.run("listall", calls))
        ms, _, size = time_get_all_records(bench, xapid.port, gar, calls)
        runs["xa_gar"].append({"median_ms": ms, "response_bytes": size})
        runs["lv_pairs"].append(lv.run("pairs", duration))
        p = subprocess.run([pairs_bin, str(xapid.port), xapid.session,
                            create, str(duration)], capture_output=True,
                           text=True)
        if p.returncode != 0:
            raise RuntimeError("xa-pairs: %s" % p.stderr.strip())
        runs["xa_pairs"].append(json.loads(p.stdout))

    def med(k, f):
        return median([r[f] for r in runs[k]])
    out = {
        "get_record_rps": med("xa_rec", "rps"),
        "getinfo_rps": med("lv_info", "rps"),
        "get_record_p50_ms": median([r["lat_ms"]["p50"]
                                     for r in runs["xa_rec"]]),
        "getinfo_p50_ms": med("lv_info", "p50_ms"),
        "get_all_records_ms": med("xa_gar", "median_ms"),
        "list_all_domains_ms": med("lv_list", "median_ms"),
        "domains": runs["lv_list"][-1]["domains"],
        "create_destroy_pairs_per_s": med("xa_pairs", "pairs_per_s"),
        "define_undefine_pairs_per_s": med("lv_pairs", "pairs_per_s"),
        "rounds": runs,
    }
    return out


def add_peer_rows(rows, r):
    def ratio(a, b):
        return "%.2f" % (a / b) if a and b else "-"
    rows.append(("peer: VM.get_record / virDomainGetInfo, 1 conn (req/s)",
                 fmt_num(r["get_record_rps"]), fmt_num(r["getinfo_rps"]),
                 ratio(r["get_record_rps"], r["getinfo_rps"])))
    rows.append(("  p50 latency (ms)", "%.3f" % r["get_record_p50_ms"],
                 "%.3f" % r["getinfo_p50_ms"], ""))
    rows.append(("peer: VM.get_all_records / ListAllDomains, {:,} (ms)"
                 .format(r["domains"]),
                 fmt_num(r["get_all_records_ms"]),
                 fmt_num(r["list_all_domains_ms"]),
                 ratio(r["list_all_domains_ms"], r["get_all_records_ms"])))
    rows.append(("peer: VM.create+destroy / define+undefine (pairs/s)",
                 fmt_num(r["create_destroy_pairs_per_s"]),
                 fmt_num(r["define_undefine_pairs_per_s"]),
                 ratio(r["create_destroy_pairs_per_s"],
                       r["define_undefine_pairs_per_s"])))


def events_bench(xapid, counts):
    """bench_events.py's measure, on this xapid: per waiter count, the
    time from a write to the last event.from answer, threads and RSS."""
    sys.path.insert(0, HERE)
    sys.dont_write_bytecode = True  # no __pycache__ in the source tree
    import bench_events
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(c for c in counts) + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(
            want, soft)), hard))
    out = {}
    for n in counts:
        log("event.from: %d waiters" % n)
        try:
            ms, lost, rss, threads = bench_events.run(
                xapid.port, xapid.password, n, xapid.proc.pid)
            out[str(n)] = {"last_answer_ms": ms, "unanswered": lost,
                           "rss_mib": rss, "threads": threads}
        except OSError as e:
            out[str(n)] = {"error": str(e)}
    return out


def add_event_rows(rows, figures, ev):
    for n, r in ev.items():
        label = "event.from: {:,} waiters, write -> last answer (ms)".format(
            int(n))
        if "error" in r:
            rows.append((label, "error", "-", "-"))
            figures.append(("event.from, %s waiters" % n, r["error"]))
            continue
        rows.append((label, fmt_num(r["last_answer_ms"]), "-", "-"))
        figures.append(("xapid while {:,} waiters park".format(int(n)),
                        "%d threads, %d MiB RSS, %d unanswered" %
                        (r["threads"], r["rss_mib"], r["unanswered"])))


# The benchmarks that start their own xapid: (name, script, arguments in
# full mode, in quick mode or None to skip it there, time limit in s).
# Missing scripts are skipped; a slow one is stopped and reported, never
# an error.
SCRIPTS = [
    ("lifecycle", "bench_lifecycle.py", ["--records", "0"],
     ["--vms", "100", "--records", "0"], 900),
    ("kvm", "bench_kvm.py", ["--runs", "5", "--linux-runs", "2"],
     ["--runs", "1", "--linux-runs", "1"], 900),
    ("db", "bench_db.py", [], None, 300),
    ("storage", "bench_storage.py", ["--size-mib", "256"], None, 600),
    ("vifs", "bench_vifs.py", [], None, 600),
    ("evacuate", "bench_evacuate.py", [], None, 600),
    ("pool_scale", "bench_pool_scale.py", [], None, 600),
    ("ha", "bench_ha.py", [], None, 600),
    ("migrate_kvm", "bench_migrate_kvm.py", ["3"], None, 600),
]


def run_scripts(build_dir, quick, skip):
    """Runs the SCRIPTS one after the other; returns name -> result."""
    env = dict(os.environ, XAPID_BIN=os.path.join(build_dir, "bin", "xapid"),
               XE_BIN=os.path.join(build_dir, "bin", "xe"),
               XA_BUILD_DIR=build_dir, XA_SOURCE_DIR=SOURCE_DIR)
    out = {}
    for name, script, full_args, quick_args, limit in SCRIPTS:
        path = os.path.join(HERE, script)
        args = quick_args if quick else full_args
        if name in skip or args is None or not os.path.exists(path):
            continue
        if name == "kvm" and not shutil.which("qemu-system-x86_64"):
            out[name] = {"skipped": "qemu-system-x86_64 not installed"}
            continue
        log("%s: %s %s (limit %d s)" % (name, script, " ".join(args), limit))
        t0 = time.monotonic()
        # Its own process group, so that a script stopped for taking too
        # long takes the xapid (and qemu) it started along.
        p = subprocess.Popen([sys.executable, path] + args, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
        try:
            so, se = p.communicate(timeout=limit)
            r = {"rc": p.returncode, "stdout": so.strip(),
                 "stderr_tail": se.strip()[-800:]}
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                so, se = p.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                so, se = p.communicate()
            r = {"rc": None, "stdout": (so or "").strip(),
                 "timeout": "stopped after %d s" % limit}
        r["seconds"] = round(time.monotonic() - t0, 1)
        out[name] = r
    return out


def add_script_figures(figures, scripts):
    for name, r in scripts.items():
        if "skipped" in r:
            figures.append(("[%s]" % name, "skipped: " + r["skipped"]))
            continue
        lines = [ln for ln in r["stdout"].splitlines() if ln.strip()]
        if r.get("timeout"):
            lines.append(r["timeout"])
        elif r["rc"] != 0:
            tail = r["stderr_tail"].splitlines()
            lines.append("exit %s: %s" % (r["rc"], tail[-1] if tail else ""))
        if not lines:
            lines = ["(no output)"]
        for i, ln in enumerate(lines[-12:]):
            figures.append(("[%s %.0f s]" % (name, r["seconds"]) if i == 0
                            else "", ln.strip()))


def loadavg():
    """The 1-minute load average: other work on the machine skews every
    absolute figure (the ratios less so, rounds being interleaved)."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return -1.0


# ---- the report ----------------------------------------------------------


def fmt_num(x, unit=""):
    if x is None:
        return "-"
    if x >= 100:
        return "{:,.0f}{}".format(x, unit)
    if x >= 10:
        return "{:.1f}{}".format(x, unit)
    return "{:.2f}{}".format(x, unit)


def print_table(rows, figures):
    head = ("benchmark", "xapid", "ceiling|libvirtd", "ratio")
    cells = [head] + [
        (r[0], r[1], r[2], r[3]) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    line = " | ".join("-" * w for w in widths)
    print()
    for i, c in enumerate(cells):
        print(" | ".join(c[j].ljust(widths[j]) if j == 0 else
                         c[j].rjust(widths[j]) for j in range(4)))
        if i == 0:
            print(line)
    print()
    wf = max(len(k) for k, _ in figures) if figures else 0
    for k, v in figures:
        print("%s  %s" % (k.ljust(wf), v))
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="sanity run, under a minute")
    ap.add_argument("--big", action="store_true",
                    help="100,000 VMs even with --quick")
    ap.add_argument("--skip", default="",
                    help="comma-separated: peer,events,scale,lifecycle,kvm,"
                    "db,storage,vifs,evacuate,pool_scale,ha,migrate_kvm")
    ap.add_argument("--build-dir", default=os.environ.get("XA_BUILD_DIR") or
                    os.path.join(SOURCE_DIR, "build"))
    ap.add_argument("--no-build", action="store_true",
                    help="use the xapid already built")
    ap.add_argument("--out", help="JSON results file "
                    "(default BUILD_DIR/bench/results.json)")
    ap.add_argument("--rounds", type=int, help="rounds per comparison")
    ap.add_argument("--duration", type=float,
                    help="seconds per measured run")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary state directory")
    opts = ap.parse_args()

    build_dir = os.path.abspath(opts.build_dir)
    rounds = opts.rounds or (2 if opts.quick else 5)
    duration = opts.duration or (0.5 if opts.quick else 3.0)
    warmup = 0.1 if opts.quick else 0.5
    gar_calls = 2 if opts.quick else 5
    sizes = [100, 1000, 10000]
    skip = set(x.strip() for x in opts.skip.split(",") if x.strip())
    big = (opts.big or not opts.quick) and "scale" not in skip
    out_path = opts.out or os.path.join(build_dir, "bench", "results.json")

    started = time.monotonic()
    if loadavg() > 0.5:
        log("note: load average %.2f before starting: other work on this "
            "machine will skew the figures" % loadavg())
    xapid_bin = build_xapid(build_dir, opts.no_build)
    load, ceiling_bin = build_tools(build_dir)
    pairs_bin, peer_bin = build_peer_tools(build_dir)

    workdir = tempfile.mkdtemp(prefix="xapid-bench-")
    xapid = ceiling = lv = None
    results = {
        "mode": "quick" if opts.quick else "full",
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "python": platform.python_version()},
        "settings": {"rounds": rounds, "seconds_per_run": duration,
                     "warmup_seconds": warmup,
                     "get_all_records_calls": gar_calls},
        "loadavg_before": loadavg(),
        "compare": {}, "get_all_records": {}, "figures": {},
        "peer": None, "events": None, "scripts": {},
    }
    rows, figures = [], []
    try:
        ceiling = Ceiling(ceiling_bin)
        xapid = Xapid(xapid_bin, workdir)
        bench = Bench(load, workdir)
        s = xapid.session
        if "peer" not in skip:
            lv, why = start_libvirtd(workdir, peer_bin)
            if lv is None:
                log("no peer benchmark: %s" % why)
                results["peer"] = {"skipped": why}
                figures.append(("peer (libvirtd)", "skipped: %s" % why))
            else:
                log("libvirtd: defining 1,000 domains")
                d = lv.run("define", 1000)
                log("  %d defined in %.1f s" % (d["defined"], d["seconds"]))
        results["figures"]["rss_start_kib"] = xapid.rss_kib()["VmRSS"]

        xapid.call("session.get_this_host", s, s)  # the trivial call works
        vms_now = len(xapid.call("VM.get_all", s))
        vm = xapid.call("VM.create", s, vm_record("bench-target"))
        vms_now += 1
        trivial = bench.body("trivial.xml", xmlrpc.client.dumps(
            (s, s), "session.get_this_host"))
        get_record = bench.body("get_record.xml", xmlrpc.client.dumps(
            (s, vm), "VM.get_record"))
        host_all = bench.body("host_get_all.json", json.dumps(
            {"jsonrpc": "2.0", "method": "host.get_all", "params": [s],
             "id": 1}))
        create = bench.body("create.xml", xmlrpc.client.dumps(
            (s, vm_record("bench")), "VM.create"))
        gar = bench.body("get_all_records.xml", xmlrpc.client.dumps(
            (s,), "VM.get_all_records"))

        cases = [
            ("session.get_this_host", trivial, "/", "trivial"),
            ("VM.get_record", get_record, "/", "get_record"),
            ("host.get_all (JSON-RPC)", host_all, "/jsonrpc",
             "jsonrpc_host_get_all"),
        ]
        for label, body, path, key in cases:
            # The ceiling answers with xapid's own reply to this call, so
            # both send the same bytes and the ratio is xapid's own work.
            reply = os.path.join(workdir, "reply-%s" % key)
            size = fetch(xapid.port, body, reply, path)
            if path.endswith("jsonrpc"):
                cl = Ceiling(ceiling_bin, body_json=reply)
            else:
                cl = Ceiling(ceiling_bin, body_xml=reply)
            try:
                for conns in (1, 16):
                    log("%s, %d connection%s: %d rounds" %
                        (label, conns, "" if conns == 1 else "s", rounds))
                    r = compare(bench, cl, xapid, body, path, conns, rounds,
                                duration, warmup)
                    r["reply_bytes"] = size
                    results["compare"]["%s_c%d" % (key, conns)] = r
                    add_rows(rows, label, conns, r)
            finally:
                cl.close()
        # The small fixed struct of the brief, for reference: what the HTTP
        # layer does with the least possible reply.
        log("ceiling alone, small reply, 1 and 16 connections")
        for conns in (1, 16):
            rs = [bench.run(ceiling.port, trivial, "/", conns,
                            duration=duration, warmup=warmup)
                  for _ in range(max(1, rounds // 2))]
            results["figures"]["ceiling_small_c%d_rps" % conns] = median(
                [x["rps"] for x in rs])
            results["figures"]["ceiling_small_c%d_runs" % conns] = rs
            figures.append(("ceiling, small reply, %d conn" % conns,
                            "%s req/s" % fmt_num(results["figures"][
                                "ceiling_small_c%d_rps" % conns])))

        if "events" not in skip:
            results["events"] = events_bench(xapid, [1000, 10000])
            add_event_rows(rows, figures, results["events"])

        # VM.get_all_records as the table grows.
        big_sizes = sizes + ([100000] if big else [])
        create_rates = []
        for n in big_sizes:
            limit = 300 if n > 10000 else None
            log("creating VMs up to %d" % n)
            t0 = time.monotonic()
            vms_now, rate = create_vms(bench, xapid, create, n, vms_now,
                                       limit)
            took = time.monotonic() - t0
            if rate:
                create_rates.append(rate)
            if vms_now < n:
                log("only %d VMs after %.0f s: skipping %d" %
                    (vms_now, took, n))
                rss = xapid.rss_kib()
                results["figures"]["vms_created_in_limit"] = vms_now
                results["figures"]["rss_kib_at_%d" % vms_now] = rss["VmRSS"]
                figures.append(("VMs made in %s s (of %s)" % (
                                    limit, "{:,}".format(n)),
                                "{:,}".format(vms_now)))
                figures.append(("xapid RSS with {:,} VMs".format(vms_now),
                                "%.1f MiB (peak %.1f MiB)" %
                                (rss["VmRSS"] / 1024, rss["VmHWM"] / 1024)))
                break
            calls = gar_calls if n <= 10000 else max(2, gar_calls // 2)
            log("VM.get_all_records with %d VMs: %d calls" % (n, calls))
            ms, ms_min, size = time_get_all_records(bench, xapid.port, gar,
                                                    calls)
            # The ceiling sending the very same bytes: the HTTP layer's
            # share of the wall time.
            reply = os.path.join(workdir, "reply-%d.xml" % n)
            fetch(xapid.port, gar, reply)
            c2 = Ceiling(ceiling_bin, body_xml=reply)
            try:
                c_ms, _, _ = time_get_all_records(bench, c2.port, gar, calls)
            finally:
                c2.close()
            os.unlink(reply)
            rss = xapid.rss_kib()
            results["get_all_records"][str(n)] = {
                "vms": vms_now, "median_ms": ms, "min_ms": ms_min,
                "ceiling_median_ms": c_ms, "response_bytes": size,
                "rss_kib": rss["VmRSS"], "hwm_kib": rss["VmHWM"],
            }
            rows.append(("VM.get_all_records, {:,} VMs (ms)".format(n),
                         fmt_num(ms), fmt_num(c_ms),
                         "%.2f" % (c_ms / ms) if ms else "-"))
            figures.append(("xapid RSS with {:,} VMs".format(vms_now),
                            "%.1f MiB (peak %.1f MiB)" %
                            (rss["VmRSS"] / 1024, rss["VmHWM"] / 1024)))
            figures.append(("get_all_records reply, {:,} VMs".format(n),
                            "%.1f MiB" % (size / 1048576)))
            if n == 10000:
                # Point lookups should not care how big the table is.
                r = bench.run(xapid.port, get_record, "/", 1,
                              duration=duration, warmup=warmup)
                results["figures"]["get_record_c1_at_10000_rps"] = r["rps"]
                figures.append(("VM.get_record, 1 conn, 10,000 VMs",
                                "%s req/s (p50 %.3f ms)" %
                                (fmt_num(r["rps"]), r["lat_ms"]["p50"])))
            if n == 1000 and lv is not None:
                log("peer: libvirtd and xapid, %d interleaved rounds" %
                    rounds)
                try:
                    results["peer"] = peer_compare(
                        bench, xapid, lv, pairs_bin, (get_record, gar, create),
                        rounds, duration, warmup, gar_calls)
                    add_peer_rows(rows, results["peer"])
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    log("WARNING: peer benchmark: %s" % e)
                    bench.failures.append("peer: %s" % e)
                lv.close()
                lv = None
        if create_rates:
            results["figures"]["vm_create_rps_c4"] = median(create_rates)
            figures.insert(0, ("VM.create, 4 conns (median of batches)",
                               "%s /s" % fmt_num(median(create_rates))))
        figures.insert(0, ("xapid RSS at start", "%.1f MiB" % (
            results["figures"]["rss_start_kib"] / 1024)))
    finally:
        if lv:
            lv.close()
        if xapid:
            xapid.close()
        if ceiling:
            ceiling.close()
        if not opts.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log("state kept in %s" % workdir)

    # The benchmarks that start their own xapid come last, one at a time.
    results["scripts"] = run_scripts(build_dir, opts.quick, skip)
    add_script_figures(figures, results["scripts"])

    elapsed = time.monotonic() - started
    results["seconds"] = round(elapsed, 1)
    results["loadavg_after"] = loadavg()
    results["failures"] = bench.failures
    figures.append(("machine", "%d CPUs, load generator and servers "
                    "share them" % (os.cpu_count() or 0)))
    figures.append(("load average before / after", "%.2f / %.2f" % (
        results["loadavg_before"], results["loadavg_after"])))
    figures.append(("total time", "%.0f s" % elapsed))
    print_table(rows, figures)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print("results: %s" % out_path)
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())

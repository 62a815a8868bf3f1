"""Xen Orchestra's `xen-api` npm package as a real third-party client:
2-argument login, listing VMs over JSON-RPC and XML-RPC, XO's initial
fetch of every type, and following events (xo/xo-client.mjs)."""

import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

import xapilib

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "xo", "xo-client.mjs")


@pytest.fixture(scope="module")
def xen_api_module():
    node = shutil.which("node") or shutil.which("nodejs")
    npm = shutil.which("npm")
    if not node:
        pytest.skip("node is not installed (Debian package nodejs)")
    if not npm:
        pytest.skip("npm is not installed (Debian package npm)")
    ver = subprocess.run([node, "--version"], capture_output=True,
                         text=True).stdout.strip()
    if int(ver.lstrip("v").split(".")[0]) < 18:
        pytest.skip("xen-api needs node >= 18, found %s" % ver)
    base = os.environ.get("XA_BUILD_DIR") or tempfile.gettempdir()
    d = os.path.join(base, "e2e-node")
    mod = os.path.join(d, "node_modules", "xen-api", "index.mjs")
    if not os.path.exists(mod):
        os.makedirs(d, exist_ok=True)
        pkg = os.path.join(d, "package.json")
        if not os.path.exists(pkg):
            with open(pkg, "w") as f:
                f.write('{"private": true}\n')
        try:
            r = subprocess.run([npm, "install", "--no-audit", "--no-fund",
                                "xen-api"], cwd=d, capture_output=True,
                               text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.skip("npm install xen-api timed out (registry "
                        "unreachable?)")
        if r.returncode != 0 or not os.path.exists(mod):
            pytest.skip("npm install xen-api failed (registry unreachable?): "
                        + (r.stderr or r.stdout)[-800:])
    return node, mod


class XoClient:
    def __init__(self, node, mod, x, transport):
        env = dict(os.environ, XEN_API_MODULE=mod, NODE_ENV="test")
        self.p = subprocess.Popen(
            [node, SCRIPT, x.url, x.password, transport],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env)
        self.lines = queue.Queue()
        self.stderr = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _read_err(self):
        for line in self.p.stderr:
            self.stderr.append(line)

    def next(self, timeout=20):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("xo client said nothing for %ss; stderr:\n%s"
                                 % (timeout, "".join(self.stderr)[-3000:]))
        assert line is not None, ("xo client exited (%r); stderr:\n%s"
                                  % (self.p.poll(),
                                     "".join(self.stderr)[-3000:]))
        d = json.loads(line)
        assert d["event"] != "error", d
        return d

    def send(self, text):
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


@pytest.mark.parametrize("transport", ["json-rpc", "xml-rpc", "auto"])
def test_xo_client(xapid, session, xen_api_module, transport):
    node, mod = xen_api_module
    vms = session.VM.get_all_records()
    pool = session.pool.get_all_records()
    master = list(pool.values())[0]["master"]
    c = XoClient(node, mod, xapid, transport)
    try:
        d = c.next()
        assert d["event"] == "connected" and d["status"] == "connected"
        assert d["sessionId"].startswith("OpaqueRef:")
        d = c.next()
        assert d["event"] == "listed"
        assert d["n_refs"] == d["n_records"] == len(vms)
        assert sorted(d["names"]) == sorted(v["name_label"]
                                            for v in vms.values())
        # int64: a JSON number over JSON-RPC, a decimal string over XML-RPC
        assert d["memoryType"] == ("string" if transport == "xml-rpc"
                                   else "number")
        d = c.next()
        assert d["event"] == "fetched"
        assert d["n_cached_vms"] == len(vms)
        assert d["pool_master"] == master
        assert d["master_name"] == session.host.get_name_label(master)
        d = c.next()
        assert d["event"] == "ready"
        # a change made here must reach XO through its event.from loop
        vm = [r for r, v in vms.items() if not v["is_control_domain"]][0]
        name = "xo-sees-%s-%d" % (transport, time.monotonic_ns() % 100000)
        time.sleep(0.5)  # XO is inside event.from by now
        session.VM.set_name_label(vm, name)
        c.send(name)
        d = c.next(timeout=25)
        assert d["event"] == "saw" and d["name_label"] == name
        assert d["ms"] < 5000, d
        d = c.next()
        assert d["event"] == "done"
        assert not [w for w in d["warnings"] if "_watchEvents" in w], \
            d["warnings"]
        assert c.p.wait(10) == 0
    finally:
        c.close()

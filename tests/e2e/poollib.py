"""Pools of real xapid processes for the e2e tests.

Each host is a xapid bound to its own loopback address (127.0.0.2,
127.0.0.3, ...: the whole of 127.0.0.0/8 answers on Linux) on ports that
every host of the pool shares, as real hosts share 443: a host reaches
another at https://<its management address>:<the HTTPS port>."""

import os
import socket
import subprocess
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

    def __init__(self, address, http_port, https_port, extra_args=()):
        super().__init__(https=True, extra_args=[
            "--pool-heartbeat", HEARTBEAT,
            "--pool-live-timeout", LIVE_TIMEOUT] + list(extra_args))
        self.address = address
        self.fixed = (http_port, https_port)

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
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.command(),
                                         stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err)
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

    def add(self, n=1, extra_args=()):
        first = len(self.hosts)
        addrs = ["127.0.0.%d" % (i + 2) for i in range(first, first + n)]
        if self.ports is None:
            self.ports = shared_ports(["127.0.0.%d" % (i + 2)
                                       for i in range(8)])
        out = []
        for a in addrs:
            h = PoolHost(a, self.ports[0], self.ports[1], extra_args)
            self.hosts.append(h)
            h.start()
            out.append(h)
        return out

    def close(self):
        problems = []
        for h in self.hosts:
            if h.proc is not None:
                alive = h.alive()
                rc = h.stop()
                if not alive or rc != 0:
                    problems.append("%s: rc=%r\n%s"
                                    % (h.address, rc, h.stderr_text()))
            h.cleanup()
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

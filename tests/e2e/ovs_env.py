"""A private Open vSwitch for the network tests.

OvsEnv makes a network namespace with veth pairs (the "NICs" xapid sees),
an ovsdb-server on a socket in a temp dir and an ovs-vswitchd with the
userspace datapath (datapath_type=netdev: no kernel module) running inside
the namespace, so every bridge and port it creates lives there and the
machine's own interfaces are never touched.  xapid is pointed at it with
xapid_args().  missing() names what this machine lacks, for skips.
"""

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
BINARIES = ("ovsdb-server", "ovsdb-tool", "ovs-vswitchd", "ovs-vsctl", "ip")


def _which(name):
    return shutil.which(name, path=os.environ.get("PATH", "") +
                        ":/usr/sbin:/sbin")


def missing():
    """None when everything needed is here, else what is not."""
    for b in BINARIES:
        if not _which(b):
            return "%s is not installed (Debian package openvswitch-switch)" % b
    if not os.path.exists(SCHEMA):
        return "%s is missing (openvswitch-common)" % SCHEMA
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


# Turns transmit checksum offload off on argv[1] (ethtool -K DEV tx off,
# without needing ethtool): SIOCETHTOOL with ETHTOOL_STXCSUM.
_TX_CSUM_OFF = """
import ctypes, fcntl, socket, struct, sys
val = ctypes.create_string_buffer(struct.pack("II", 0x17, 0))
ifr = struct.pack("16sP", sys.argv[1].encode(), ctypes.addressof(val))
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
fcntl.ioctl(sock.fileno(), 0x8946, ifr + bytes(16))
"""


def _run(*cmd, check=True, timeout=20):
    return subprocess.run(cmd, check=check, capture_output=True, text=True,
                          timeout=timeout)


class OvsEnv:
    def __init__(self, nics=3):
        self.dir = tempfile.mkdtemp(prefix="xapid-ovs-")
        self.sock = os.path.join(self.dir, "db.sock")
        self.db = os.path.join(self.dir, "conf.db")
        self.ns = "xa" + secrets.token_hex(4)
        self.nics = ["xt%d" % i for i in range(nics)]
        self.ovsdb = None
        self.vswitchd = None
        self.helpers = []  # other processes to end in close()

    # -- life cycle

    def start(self):
        _run("ip", "netns", "add", self.ns)
        for n in self.nics:
            _run("ip", "-n", self.ns, "link", "add", n, "type", "veth",
                 "peer", "name", n + "p")
            _run("ip", "-n", self.ns, "link", "set", n, "up")
            _run("ip", "-n", self.ns, "link", "set", n + "p", "up")
        self.start_ovsdb(fresh=True)
        self.start_vswitchd()
        return self

    def start_vswitchd(self):
        log = open(os.path.join(self.dir, "vswitchd.log"), "ab")
        # Its rundir (the bridges' OpenFlow management sockets) is the
        # temp dir, next to db.sock, where xapid looks for them; the
        # default (/var/run/openvswitch) would be shared by every switch
        # on the machine.
        env = dict(os.environ, OVS_RUNDIR=self.dir)
        self.vswitchd = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, _which("ovs-vswitchd"),
             "unix:" + self.sock,
             "--unixctl=" + os.path.join(self.dir, "vswitchd.ctl"),
             "--pidfile=" + os.path.join(self.dir, "vswitchd.pid")],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        log.close()

    def restart_vswitchd(self, crash=True):
        """Ends ovs-vswitchd and starts a new one; ovsdb-server stays up.
        'crash': SIGKILL, which leaves its socket files behind; else
        SIGTERM (a service restart), after which it removes them."""
        if crash:
            self.vswitchd.kill()
        else:
            self.vswitchd.terminate()
        self.vswitchd.wait(10)
        self.start_vswitchd()

    def start_ovsdb(self, fresh=False):
        """(Re)starts ovsdb-server; 'fresh' starts from an empty database
        (what a wiped switch looks like)."""
        if fresh and os.path.exists(self.db):
            os.unlink(self.db)
        if not os.path.exists(self.db):
            _run("ovsdb-tool", "create", self.db, SCHEMA)
        log = open(os.path.join(self.dir, "ovsdb.log"), "ab")
        self.ovsdb = subprocess.Popen(
            [_which("ovsdb-server"), self.db, "--remote=punix:" + self.sock,
             "--unixctl=" + os.path.join(self.dir, "ovsdb.ctl"),
             "--pidfile=" + os.path.join(self.dir, "ovsdb.pid")],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if os.path.exists(self.sock) and self.vsctl_ok("--no-wait",
                                                           "init"):
                return
            time.sleep(0.05)
        raise RuntimeError("ovsdb-server did not come up")

    def stop_ovsdb(self):
        if self.ovsdb is not None:
            self.ovsdb.terminate()
            self.ovsdb.wait(10)
            self.ovsdb = None

    def start_dhcp_server(self, nic, server_ip, first, last, prefix=24):
        """dnsmasq serving DHCP (no DNS) on the peer end of NIC's veth,
        which gets SERVER_IP, handing out FIRST..LAST with SERVER_IP as the
        router.  None (after skipping is decided by the caller) when
        dnsmasq is not installed."""
        dnsmasq = _which("dnsmasq")
        if not dnsmasq:
            return None
        peer = nic + "p"
        _run("ip", "-n", self.ns, "addr", "add",
             "%s/%d" % (server_ip, prefix), "dev", peer)
        # A veth leaves UDP checksums to "hardware"; ovs-vswitchd's
        # userspace datapath forwards such frames as they are, so the
        # client would drop every reply: have the kernel checksum them.
        _run("ip", "netns", "exec", self.ns, sys.executable, "-c",
             _TX_CSUM_OFF, peer)
        mask = ".".join(str((0xffffffff << (32 - prefix) >> (24 - 8 * i))
                            & 0xff) for i in range(4))
        log = open(os.path.join(self.dir, "dnsmasq-%s.log" % peer), "ab")
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, dnsmasq, "--keep-in-foreground",
             "--conf-file=/dev/null", "--port=0", "--user=root",
             "--interface=" + peer, "--bind-interfaces", "--log-dhcp",
             "--log-facility=-",
             "--dhcp-range=%s,%s,%s,1h" % (first, last, mask),
             "--dhcp-option=3," + server_ip,
             "--dhcp-option=6," + server_ip,
             "--dhcp-leasefile=" + os.path.join(self.dir,
                                                "dnsmasq-%s.leases" % peer),
             "--pid-file=" + os.path.join(self.dir, "dnsmasq-%s.pid" % peer)],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self.helpers.append(p)
        return p

    def close(self):
        for p in self.helpers + [self.vswitchd, self.ovsdb]:
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        _run("ip", "netns", "del", self.ns, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- xapid

    def xapid_args(self):
        return ["--network", "ovs", "--ovsdb", "unix:" + self.sock,
                "--ovs-datapath", "netdev",
                "--net-namespace", "/run/netns/" + self.ns,
                "--nics", ",".join(self.nics)]

    # -- looking at the switch

    def vsctl(self, *args):
        r = _run("ovs-vsctl", "--db=unix:" + self.sock, "--timeout=10",
                 *args)
        return r.stdout.strip()

    def vsctl_ok(self, *args):
        r = _run("ovs-vsctl", "--db=unix:" + self.sock, "--timeout=5", *args,
                 check=False)
        return r.returncode == 0

    def bridges(self):
        return set(self.vsctl("list-br").split())

    def ports(self, bridge):
        return set(self.vsctl("list-ports", bridge).split())

    def all_ports(self):
        out = self.vsctl("--format=csv", "--no-headings", "--columns=name",
                         "list", "Port")
        return {line.strip('"') for line in out.split() if line}

    def get(self, table, record, column):
        return self.vsctl("get", table, record, column)

    def ext_ids(self, table, record):
        """external_ids as a dict."""
        out = self.vsctl("--format=json", "--columns=external_ids", "find",
                         table, "name=" + record)
        import json
        doc = json.loads(out)
        if not doc["data"]:
            return None
        return {k: v for k, v in doc["data"][0][0][1]}

    def ofctl(self, cmd, bridge, *args):
        """ovs-ofctl CMD on BRIDGE's management socket (OpenFlow 1.3)."""
        sock = "unix:" + os.path.join(self.dir, bridge + ".mgmt")
        return _run("ovs-ofctl", "-O", "OpenFlow13", cmd, sock,
                    *args).stdout

    def appctl(self, *args):
        """ovs-appctl to this ovs-vswitchd (e.g. ofproto/trace)."""
        return _run("ovs-appctl", "-t",
                    os.path.join(self.dir, "vswitchd.ctl"), *args).stdout

    def ns_ip(self, *args):
        return _run("ip", "-n", self.ns, *args).stdout

    def wait_for(self, fn, timeout=15, what="condition"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = fn()
                if last:
                    return last
            except subprocess.CalledProcessError as e:
                last = e.stderr
            time.sleep(0.1)
        raise AssertionError("timed out waiting for %s (last: %r)"
                             % (what, last))

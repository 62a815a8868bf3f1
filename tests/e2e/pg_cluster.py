"""A private PostgreSQL cluster for the tests, and databases on a server.

Cluster() runs Debian's postgresql (apt: postgresql) from a temporary
directory on a free port of 127.0.0.1 with trust authentication, as the
'postgres' user (initdb refuses root).  unavailable() says why it cannot
run here, so tests can skip naming what is missing.

Database(server_uri) creates a fresh database on a server (through psql)
and drops it again: xapilib gives every xapid one when XA_E2E_DB is set.

Run as a script for tests written in C:
    pg_cluster.py start DIR   -> prints the server uri, leaves it running
    pg_cluster.py stop DIR
"""

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.parse

PG_USER = "postgres"


def _bindir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4])
                   if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else None


def _psql():
    b = _bindir()
    if b and os.access(os.path.join(b, "psql"), os.X_OK):
        return os.path.join(b, "psql")
    return shutil.which("psql")


def unavailable():
    """None when a private cluster can run, else why not."""
    if not _bindir():
        return ("PostgreSQL is not installed (apt-get install postgresql: "
                "no /usr/lib/postgresql/*/bin/initdb)")
    if os.geteuid() != 0:
        try:
            if pwd.getpwuid(os.geteuid()).pw_name != PG_USER:
                return "a private PostgreSQL cluster needs root or postgres"
        except KeyError:
            return "unknown user"
    else:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return "PostgreSQL's '%s' user does not exist" % PG_USER
        if not shutil.which("runuser"):
            return "runuser (util-linux) is missing"
    return None


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_pg(cmd, **kw):
    """Runs cmd as the postgres user; CalledProcessError carries output."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", PG_USER, "--"] + cmd
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **kw)


class Cluster:
    """initdb + pg_ctl in a directory of its own; start() / stop() /
    restart() / destroy()."""

    def __init__(self, base=None):
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        self.bindir = _bindir()
        self._own_base = base is None
        self.base = base or tempfile.mkdtemp(prefix="xapid-pg-")
        self.data = os.path.join(self.base, "data")
        self.log = os.path.join(self.base, "postgres.log")
        self.port_file = os.path.join(self.base, "port")
        self.port = None
        if os.path.exists(self.port_file):
            with open(self.port_file) as f:
                self.port = int(f.read())
        if os.geteuid() == 0:
            pw = pwd.getpwnam(PG_USER)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        os.chmod(self.base, 0o700)

    def _bin(self, name):
        return os.path.join(self.bindir, name)

    def uri(self, dbname="postgres"):
        return "postgresql://%s@127.0.0.1:%d/%s" % (PG_USER, self.port,
                                                    dbname)

    def init(self):
        # the test cluster's own files need no fsync; the writes under
        # test keep PostgreSQL's defaults (fsync, synchronous_commit on)
        _as_pg([self._bin("initdb"), "-D", self.data, "-A", "trust",
                "-U", PG_USER, "--no-sync", "-E", "UTF8",
                "--no-instructions"])
        self.port = _free_port()
        with open(self.port_file, "w") as f:
            f.write(str(self.port))
        return self

    def start(self):
        if not os.path.exists(self.data):
            self.init()
        opts = ("-c listen_addresses=127.0.0.1 -c port=%d "
                "-c unix_socket_directories='%s' -c max_connections=200"
                % (self.port, self.base))
        _as_pg([self._bin("pg_ctl"), "-D", self.data, "-l", self.log,
                "-o", opts, "-w", "-t", "60", "start"])
        return self

    def stop(self, mode="fast"):
        """mode: fast (clean) or immediate (like a crash: WAL recovery)."""
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            _as_pg([self._bin("pg_ctl"), "-D", self.data, "-m", mode, "-w",
                    "-t", "60", "stop"])

    def restart(self, mode="fast"):
        self.stop(mode)
        return self.start()

    def psql(self, sql, dbname="postgres"):
        return psql(self.uri(dbname), sql)

    def log_text(self, tail=4000):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-tail:]
        except OSError:
            return ""

    def destroy(self):
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.base, ignore_errors=True)


def psql(uri, sql):
    """Runs sql with psql against uri; returns the unaligned output."""
    r = subprocess.run([_psql(), "-X", "-q", "-A", "-t", "-v",
                        "ON_ERROR_STOP=1", "-d", uri, "-c", sql],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("psql %s: %s" % (sql, r.stdout.strip()))
    return r.stdout.strip()


def with_dbname(uri, dbname):
    """uri with its database replaced by dbname."""
    u = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + dbname,
                                    u.query, u.fragment))


class Database:
    """A fresh database on the server of server_uri, dropped by drop()."""

    def __init__(self, server_uri):
        self.server_uri = server_uri
        self.name = "xa_e2e_%s" % secrets.token_hex(6)
        psql(server_uri, "CREATE DATABASE %s" % self.name)
        self.uri = with_dbname(server_uri, self.name)

    def drop(self):
        if self.name:
            try:
                psql(self.server_uri,
                     "DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.name)
            except (RuntimeError, OSError, subprocess.SubprocessError):
                pass  # the server may be gone already: nothing to leak
            self.name = None


def main(argv):
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        print("usage: pg_cluster.py start|stop DIR", file=sys.stderr)
        return 2
    if argv[1] == "start":
        reason = unavailable()
        if reason:
            print(reason, file=sys.stderr)
            return 77
        os.makedirs(argv[2], exist_ok=True)
        c = Cluster(argv[2])
        try:
            c.start()
        except subprocess.CalledProcessError as e:
            print(e.stdout, c.log_text(), file=sys.stderr)
            return 1
        print(c.uri())
        return 0
    c = Cluster(argv[2])
    c.stop("immediate")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Helpers for the end-to-end tests: run a real xapid, talk to it.

Only the standard library is used, so the tests run with Debian's python3
and pytest and nothing else.
"""

import hashlib
import http.client
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import xmlrpc.client

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("XA_SOURCE_DIR") or os.path.abspath(
    os.path.join(HERE, "..", ".."))
BUILD_DIR = os.environ.get("XA_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
SCHEMA_DIR = os.path.join(SOURCE_DIR, "api-schema")

START_TIMEOUT = 15.0
# A sanitizer build checks for leaks as it exits: seconds for a process
# holding a large database, and a pool's members stop together on two
# shared cores (test_pool_scale's 11 members took over 10 s under load)
STOP_TIMEOUT = 30.0 if os.environ.get("XA_SANITIZE") else 10.0


def xapid_bin():
    """The xapid under test, or None when there is none to run."""
    b = os.environ.get("XAPID_BIN") or os.path.join(BUILD_DIR, "bin", "xapid")
    return b if os.access(b, os.X_OK) else None


def free_port():
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the XenAPI over XML-RPC --------------------------------------------


class XapiError(Exception):
    """A XenAPI Failure: details is ErrorDescription, [CODE, p1, ...]."""

    def __init__(self, details):
        super().__init__(details)
        self.details = list(details)
        self.code = self.details[0] if self.details else None
        self.params = self.details[1:]


class _Method:
    def __init__(self, call, name):
        self._call = call
        self._name = name

    def __getattr__(self, name):
        return _Method(self._call, "%s.%s" % (self._name, name))

    def __call__(self, *args):
        return self._call(self._name, *args)


class Api:
    """An XML-RPC connection to xapid (one per thread: not thread safe)."""

    def __init__(self, url, context=None, timeout=None):
        self.url = url
        kw = {"allow_none": True}
        if context is not None:
            kw["context"] = context
        self.proxy = xmlrpc.client.ServerProxy(url, **kw)
        if timeout is not None:
            # ServerProxy has no timeout option; its transport makes the
            # connection lazily, so patch the connection it creates.
            t = self.proxy._ServerProxy__transport
            orig = t.make_connection

            def make_connection(host, _orig=orig):
                c = _orig(host)
                c.timeout = timeout
                return c

            t.make_connection = make_connection

    def raw(self, method, *params):
        """The reply struct as decoded by xmlrpc.client."""
        return getattr(self.proxy, method)(*params)

    def call(self, method, *params):
        """The Value of a success, XapiError for a failure."""
        r = self.raw(method, *params)
        if r.get("Status") == "Success":
            return r["Value"]
        raise XapiError(r.get("ErrorDescription", []))

    def login(self, user, password, *more):
        return Session(self,
                       self.call("session.login_with_password", user, password,
                                 *more))

    def close(self):
        self.proxy("close")()


class Session:
    """A logged-in session: s.VM.get_all() or s.call("VM.get_all")."""

    def __init__(self, api, ref):
        self.api = api
        self.ref = ref

    def call(self, method, *params):
        return self.api.call(method, self.ref, *params)

    def raw(self, method, *params):
        return self.api.raw(method, self.ref, *params)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self.call, name)

    def logout(self):
        self.api.call("session.logout", self.ref)


def expect_error(fn, *args):
    """Calls fn and returns the XapiError it raises (fails if none)."""
    try:
        r = fn(*args)
    except XapiError as e:
        return e
    raise AssertionError("expected a XenAPI failure, got %r" % (r,))


# ---- raw HTTP ------------------------------------------------------------


class HttpReply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # list of (name, value), as sent
        self.body = body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)

    def xml(self):
        return xmlrpc.client.loads(self.body.decode("utf-8"))[0][0]

    def __repr__(self):
        return "HttpReply(%d, %r)" % (self.status, self.body[:300])


def http_request(port, method, path, body=b"", headers=None, timeout=30,
                 context=None):
    if context is not None:
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout,
                                        context=context)
    else:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = {"Content-Type": "text/xml"}
        h.update(headers or {})
        if isinstance(body, str):
            body = body.encode("utf-8")
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        return HttpReply(r.status, r.getheaders(), data)
    finally:
        c.close()


def xml_call_body(method, *params):
    return xmlrpc.client.dumps(tuple(params), method,
                               allow_none=True).encode("utf-8")


# ---- accounts ----------------------------------------------------------


def account_line(user, role, password):
    """One line of the state dir's accounts file (server/accounts.c)."""
    salt = secrets.token_bytes(16)
    h = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 20000, 32)
    return "%s:%s:%s:%s\n" % (user, role, salt.hex(), h.hex())


# ---- the server process ------------------------------------------------


def kill_strays(path):
    """SIGKILLs every process whose command line names 'path': the guests
    (qemu, dhclient, ...) a xapid started under its work directory.  They
    outlive a kill -9 of xapid on purpose (a restarted xapid adopts them),
    so a test that is done with the directory must end them itself."""
    me = os.getpid()
    needle = os.path.join(path, "").encode()  # "/tmp/h1/" spares "/tmp/h10"
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if needle in cmd:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


class Xapid:
    """One xapid process on loopback, with its own state directory.

    start() / stop() / kill9() may be called repeatedly on the same state
    directory; each start picks fresh ports."""

    def __init__(self, workdir=None, extra_args=(), https=False,
                 accounts=None, password=None):
        self.bin = xapid_bin()
        if not self.bin:
            raise RuntimeError("no xapid binary (set XAPID_BIN)")
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="xapid-e2e-")
            workdir = self._tmp.name
        self.workdir = workdir
        self.state_dir = os.path.join(workdir, "state")
        self.password = password or "pw-" + secrets.token_hex(8)
        self.password_file = os.path.join(workdir, "root-password")
        with open(self.password_file, "w") as f:
            f.write(self.password + "\n")
        if accounts:
            # Accounts must be in place before the first start: xapid only
            # writes the file when it does not exist.
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            with open(os.path.join(self.state_dir, "accounts"), "w") as f:
                f.write(account_line("root", "pool-admin", self.password))
                for user, role, pw in accounts:
                    f.write(account_line(user, role, pw))
        self.extra_args = list(extra_args)
        # XA_E2E_DB=postgresql://... names a PostgreSQL server: every
        # xapid then keeps its pool database in a fresh database there
        self.db = None
        if os.environ.get("XA_E2E_DB", "").startswith("postgresql://"):
            import pg_cluster
            self.db = pg_cluster.Database(os.environ["XA_E2E_DB"])
        self.https = https
        self.proc = None
        self.port = None
        self.https_port = None
        self.starts = 0
        self.stderr_path = None

    # -- process control

    @property
    def url(self):
        return "http://127.0.0.1:%d/" % self.port

    @property
    def https_url(self):
        return "https://127.0.0.1:%d/" % self.https_port

    @property
    def pid(self):
        return self.proc.pid

    def command(self):
        return [self.bin, "--state-dir", self.state_dir,
                "--bind", "127.0.0.1",
                "--http-port", str(self.port),
                "--https-port", str(self.https_port or 0),
                "--root-password-file", self.password_file] + (
                    ["--db", self.db.uri] if self.db else []) + self.extra_args

    def stderr_text(self, tail=6000):
        try:
            with open(self.stderr_path, "rb") as f:
                data = f.read()
        except (OSError, TypeError):
            return ""
        return data[-tail:].decode("utf-8", "replace")

    def start(self):
        assert self.proc is None, "already running"
        self.starts += 1
        self.port = free_port()
        self.https_port = free_port() if self.https else None
        self.stderr_path = os.path.join(self.workdir,
                                        "xapid-%d.stderr" % self.starts)
        err = open(self.stderr_path, "wb")
        try:
            self.proc = subprocess.Popen(self.command(),
                                         stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err)
        finally:
            err.close()
        self._wait_ready()
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                raise RuntimeError("xapid exited with %d during start-up:\n%s"
                                   % (rc, self.stderr_text()))
            try:
                with socket.create_connection(("127.0.0.1", self.port),
                                              timeout=1):
                    pass
                r = Api(self.url, timeout=5).proxy.system.listMethods()
                if isinstance(r, list) and r:
                    return
                last = "listMethods answered %r" % (r,)
            except (OSError, xmlrpc.client.Error, http.client.HTTPException) \
                    as e:
                last = repr(e)
            time.sleep(0.05)
        self.kill9()
        raise RuntimeError("xapid did not answer within %.0f s (%s):\n%s"
                           % (START_TIMEOUT, last, self.stderr_text()))

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM; returns the exit code (None: it had to be killed)."""
        if self.proc is None:
            return 0
        p = self.proc
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = None
        self.proc = None
        return rc

    def stop_clean(self):
        """Stops and asserts the process ended cleanly on SIGTERM."""
        rc = self.stop()
        assert rc == 0, ("xapid did not exit cleanly on SIGTERM within "
                         "%.0f s (rc=%r):\n%s"
                         % (STOP_TIMEOUT, rc, self.stderr_text()))

    def kill9(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop_clean()
        return self.start()

    def cleanup(self):
        self.kill9()
        kill_strays(self.workdir)
        if self.db is not None:
            self.db.drop()
            self.db = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # -- clients

    def ssl_context(self):
        ctx = ssl.create_default_context(
            cafile=os.path.join(self.state_dir, "xapi-ssl.pem"))
        return ctx

    def api(self, https=False, timeout=None):
        if https:
            return Api(self.https_url, context=self.ssl_context(),
                       timeout=timeout)
        return Api(self.url, timeout=timeout)

    def login(self, user="root", password=None, https=False):
        """A fresh XML-RPC connection and session (a Session object)."""
        return self.api(https).login(user, self.password
                                     if password is None else password)

    def session(self, *a, **kw):
        return self.login(*a, **kw)

    def post(self, path, body, headers=None, timeout=30):
        """A raw POST; returns HttpReply(status, headers, body bytes)."""
        return http_request(self.port, "POST", path, body, headers, timeout)

    def request(self, method, path, body=b"", headers=None, timeout=30):
        return http_request(self.port, method, path, body, headers, timeout)

    def xml(self, method, *params, path="/"):
        """A raw XML-RPC call: the HttpReply."""
        return self.post(path, xml_call_body(method, *params))

    def jsonrpc(self, method, params, version=1, id=1, path="/jsonrpc",
                raw=None):
        """A raw JSON-RPC call: (HttpReply, decoded body or None)."""
        if raw is None:
            req = {"method": method, "params": params, "id": id}
            if version == 2:
                req["jsonrpc"] = "2.0"
            raw = json.dumps(req)
        r = self.post(path, raw, {"Content-Type": "application/json"})
        try:
            doc = json.loads(r.body)
        except ValueError:
            doc = None
        return r, doc

    def json_call(self, method, *params):
        """A v1 JSON-RPC call returning the result or raising XapiError."""
        r, doc = self.jsonrpc(method, list(params))
        assert r.status == 200, r
        if doc.get("error") is not None:
            raise XapiError(doc["error"])
        return doc["result"]

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return None


# ---- the schema --------------------------------------------------------


def load_schema_classes():
    """api-schema/classes/*.json as {class name: dict}."""
    import glob
    out = {}
    for p in sorted(glob.glob(os.path.join(SCHEMA_DIR, "classes", "*.json"))):
        with open(p) as f:
            d = json.load(f)
        out[d["class"]] = d
    return out


def load_xagen_schema():
    """The generator's own view of the schema (messages with async and
    hidden flags), imported from api-schema/codegen/xagen.py."""
    sys.path.insert(0, os.path.join(SCHEMA_DIR, "codegen"))
    old = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # leave the source tree alone
    try:
        import xagen
    finally:
        sys.path.pop(0)
        sys.dont_write_bytecode = old
    return xagen.Schema(SCHEMA_DIR)


def reference_json_path():
    for p in (os.path.join(SOURCE_DIR, "..", "shared", "reference",
                           "xenapi.json"),
              "/work/shared/reference/xenapi.json"):
        if os.path.exists(p):
            return os.path.abspath(p)
    return None


def unimplemented_messages():
    p = os.path.join(SCHEMA_DIR, "unimplemented.txt")
    out = []
    with open(p) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out

"""The pool database on PostgreSQL (server/db/persist-pg.c).

A private cluster (pg_cluster.Cluster: Debian's postgresql, a temporary
directory, a free port) serves every xapid of this module, each on a
database of its own (XA_E2E_DB, see xapilib).  Covered: a representative
part of the e2e suite run against it, the schema xapid creates, a
PostgreSQL restart (clean and crash-like) under write load losing no
acknowledged write, and an outage: writes wait, then are refused with a
clear error, reads go on, and writing resumes when it is back.

Skipped, naming it, when PostgreSQL is not installed or cannot run."""

import http.client
import os
import random
import subprocess
import sys
import threading
import time

import pytest

import pg_cluster
import xapilib
from xapilib import XapiError

HERE = os.path.dirname(os.path.abspath(__file__))
SUBSET = ["test_implicit.py", "test_events.py", "test_durability.py",
          "test_vm_lifecycle.py"]


@pytest.fixture(scope="module")
def cluster():
    reason = pg_cluster.unavailable()
    if reason:
        pytest.skip("PostgreSQL: %s" % reason)
    c = pg_cluster.Cluster()
    try:
        c.start()
    except subprocess.CalledProcessError as e:
        c.destroy()
        pytest.skip("PostgreSQL would not start: %s %s"
                    % (e.stdout, c.log_text()))
    old = os.environ.get("XA_E2E_DB")
    os.environ["XA_E2E_DB"] = c.uri()
    yield c
    if old is None:
        del os.environ["XA_E2E_DB"]
    else:
        os.environ["XA_E2E_DB"] = old
    c.destroy()


def test_suite_subset_on_postgresql(cluster):
    """One suite, two backends: these run on sqlite by default."""
    env = dict(os.environ, XA_E2E_DB=cluster.uri())
    r = subprocess.run([sys.executable, "-m", "pytest", "-q",
                        "-p", "no:cacheprovider"] + SUBSET, cwd=HERE,
                       env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-8000:]
    assert " passed" in r.stdout, r.stdout[-2000:]


def test_schema_and_rows_in_postgresql(cluster, xapid_factory):
    x = xapid_factory.start()
    s = x.login()
    vm = s.VM.create(dict(s.VM.get_record(
        s.VM.get_by_name_label("Other install media")[0]),
        name_label="in-pg", is_a_template=False))
    meta = dict(line.split("|") for line in cluster.psql(
        "SELECT key, value FROM xapid_meta", x.db.name).splitlines())
    assert meta["schema_version"] == "1"
    assert int(meta["generation"]) > 0
    data = cluster.psql("SELECT data FROM xapid_rows WHERE cls = 'VM' "
                        "AND ref = '%s'" % vm, x.db.name)
    assert '"in-pg"' in data
    # sessions do not persist
    assert cluster.psql("SELECT count(*) FROM xapid_rows "
                        "WHERE cls = 'session'", x.db.name) == "0"


class Writer(threading.Thread):
    """Writes to its own VM until told to stop, recording what was
    acknowledged; any failure is kept."""

    def __init__(self, x, sref, vm, tag, tmpl):
        super().__init__(daemon=True)
        self.api = x.api(timeout=30)
        self.sref, self.vm, self.tag, self.tmpl = sref, vm, tag, tmpl
        self.stop = threading.Event()
        self.last_name = None
        self.keys = {}
        self.created = {}
        self.ack_times = []
        self.errors = []

    def run(self):
        rnd = random.Random(self.tag)
        n = 0
        while not self.stop.is_set():
            n += 1
            op = rnd.choice(("name", "name", "key", "create"))
            try:
                if op == "name":
                    v = "%s-n%d" % (self.tag, n)
                    self.api.call("VM.set_name_label", self.sref, self.vm, v)
                    self.last_name = v
                elif op == "key":
                    k = "%s-k%d" % (self.tag, n)
                    self.api.call("VM.add_to_other_config", self.sref,
                                  self.vm, k, str(n))
                    self.keys[k] = str(n)
                else:
                    name = "%s-c%d" % (self.tag, n)
                    ref = self.api.call("VM.create", self.sref,
                                        dict(self.tmpl, name_label=name))
                    self.created[ref] = name
                self.ack_times.append(time.monotonic())
            except XapiError as e:
                self.errors.append(e.details)
            except (OSError, http.client.HTTPException) as e:
                self.errors.append(repr(e))
                return


def _base_record(s):
    tmpl = s.VM.get_by_name_label("Other install media")[0]
    base = s.VM.get_record(tmpl)
    base.update(is_a_template=False, other_config={})
    return base


def _check_acknowledged(s, writers):
    recs = s.VM.get_all_records()
    for w in writers:
        if w.last_name is not None:
            assert recs[w.vm]["name_label"] == w.last_name, w.tag
        oc = recs[w.vm]["other_config"]
        for k, v in w.keys.items():
            assert oc.get(k) == v, (k, w.tag)
        for ref, name in w.created.items():
            assert ref in recs and recs[ref]["name_label"] == name, \
                (ref, name)


def test_postgresql_restart_under_write_load(cluster, xapid_factory):
    x = xapid_factory.start()
    s = x.login()
    base = _base_record(s)
    vms = [s.VM.create(dict(base, name_label="load-%d" % i))
           for i in range(4)]
    writers = [Writer(x, s.ref, vm, "w%d" % i, base)
               for i, vm in enumerate(vms)]
    for w in writers:
        w.start()
    time.sleep(1.0)
    restarts = []
    for mode in ("fast", "immediate"):
        cluster.restart(mode)
        restarts.append(time.monotonic())
        time.sleep(1.5)
    for w in writers:
        w.stop.set()
    for w in writers:
        w.join(40)
        assert not w.is_alive()
    # the outages were shorter than the retry window: commits waited
    assert not [w.errors for w in writers if w.errors], \
        [w.errors for w in writers] + [x.stderr_text()]
    # writing went on after the last restart
    assert sum(1 for w in writers for t in w.ack_times
               if t > restarts[-1]) > 0
    # every acknowledged write is in PostgreSQL: kill -9 and reload
    x.kill9()
    x.start()
    _check_acknowledged(x.login(), writers)


def test_postgresql_outage_refuses_writes_then_recovers(cluster,
                                                        xapid_factory):
    x = xapid_factory.start()
    s = x.login()
    vm = s.VM.create(dict(_base_record(s), name_label="outage"))
    s.VM.set_name_label(vm, "before")
    cluster.stop("fast")
    try:
        # a write waits for the database, then fails: not acknowledged
        t0 = time.monotonic()
        e = xapilib.expect_error(s.VM.set_name_label, vm, "during")
        waited = time.monotonic() - t0
        assert e.code == "INTERNAL_ERROR", e.details
        assert "database write failed" in e.params[0], e.details
        assert 8 < waited < 20, waited
        # while it is away, writes are refused at once, and say why
        t0 = time.monotonic()
        e = xapilib.expect_error(s.VM.add_to_other_config, vm, "k", "v")
        assert time.monotonic() - t0 < 2
        assert "database unavailable" in e.params[0], e.details
        # reads (and sessions, which do not persist) go on
        assert "k" not in s.VM.get_other_config(vm)
        x.login().logout()
    finally:
        cluster.start()
    # writes resume once the persister's retry finds it back
    deadline = time.monotonic() + 15
    while True:
        try:
            s.VM.set_name_label(vm, "after")
            break
        except XapiError as err:
            assert "database" in err.params[0], err.details
            assert time.monotonic() < deadline, err.details
            time.sleep(0.5)
    s.VM.add_to_other_config(vm, "k", "v")
    x.kill9()
    x.start()
    s = x.login()
    assert s.VM.get_name_label(vm) == "after"
    assert s.VM.get_other_config(vm).get("k") == "v"


def test_new_server_loads_from_postgresql(cluster, xapid_factory):
    """A server started on another state directory but the same database
    (a new master) finds everything the first one wrote."""
    a = xapid_factory.start()
    s = a.login()
    vm = s.VM.create(dict(_base_record(s), name_label="handed-over"))
    s.VM.add_to_other_config(vm, "from", "a")
    a.stop_clean()
    b = xapid_factory.start(extra_args=["--db", a.db.uri])
    sb = b.login()
    assert sb.VM.get_name_label(vm) == "handed-over"
    assert sb.VM.get_other_config(vm)["from"] == "a"

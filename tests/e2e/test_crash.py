"""Crash safety: many clients change objects while xapid is killed with
SIGKILL at random moments, over and over.

After every kill the state directory must pass `xapid --check-db`
(SQLite's own check, then the loader and xa_db_check_integrity()), and
after every restart:

- every acknowledged write is there: each client keeps the state it was
  told it made (VM names, other_config keys, the VMs it created and
  destroyed with their VBDs and VIFs); the one call a client had in
  flight when the server died may have happened or not, and the check
  adopts whichever it finds;
- nothing appears that nobody asked for;
- the database is consistent through the API: every reference field of
  every record names a live object or is NULL, and every computed set
  (VM.VBDs, VBD.VM, ...) agrees with the field it comes from.

CI runs CYCLES cycles; XA_LONG=1 runs LONG_CYCLES (docs/testing.md).
"""

import http.client
import os
import random
import subprocess
import sys
import threading
import time
import xml.parsers.expat

import xapilib
from xapilib import XapiError

LONG = os.environ.get("XA_LONG") == "1"
CYCLES = 100 if LONG else 10
THREADS = 8
NULL = "OpaqueRef:NULL"
PREFIX = "crash-"
MAX_VMS = 6     # per client; destroy keeps the population bounded
MAX_VBDS = 3    # per VM: well inside the devices a VM offers
VIF_DEVICES = ("0", "1", "2")

# What a dead server looks like to a client: refused, reset, or a reply
# cut short.
GONE = (OSError, http.client.HTTPException, xml.parsers.expat.ExpatError)


class VmState:
    """What a client knows it made of one VM."""

    def __init__(self, name):
        self.name = name
        self.oc = {}        # other_config keys this test added
        self.vbds = set()
        self.vifs = {}      # VIF ref -> device

    def free_vif_device(self):
        used = set(self.vifs.values())
        for d in VIF_DEVICES:
            if d not in used:
                return d
        return None


class Pending:
    """The call a client had sent when the server went away."""

    def __init__(self, kind, vm=None, value=None, key=None):
        self.kind = kind
        self.vm = vm
        self.value = value
        self.key = key

    def __repr__(self):
        return "Pending(%s, %s, %r, %r)" % (self.kind, self.vm, self.value,
                                           self.key)


class Writer(threading.Thread):
    """One client: its own connection and session, changing only the VMs
    it owns (so the expected state of each VM has one author)."""

    def __init__(self, x, idx, cycle, vms, base, net, seed):
        super().__init__(daemon=True)
        self.api = x.api(timeout=30)
        self.sref = None
        self.x = x
        self.idx = idx
        self.cycle = cycle
        self.vms = vms          # ref -> VmState, shared across cycles
        self.destroyed = []     # (vm, vbds, vifs) acknowledged destroyed
        self.base = base
        self.net = net
        self.rnd = random.Random(seed)
        self.pending = None
        self.acks = 0
        self.unexpected = []
        self.ready = threading.Event()

    def call(self, method, *args):
        return self.api.call(method, self.sref, *args)

    def pick_op(self):
        n = len(self.vms)
        if n < 2:
            return "create"
        ops = ["name"] * 3 + ["oc"] * 3 + ["vbd"] * 2 + ["vif"] * 2
        if n < MAX_VMS:
            ops += ["create"] * 2
        if n > 2:
            ops += ["destroy"]
        return self.rnd.choice(ops)

    def step(self, n):
        """One call; False when the pick needed none (a full VM)."""
        op = self.pick_op()
        tag = "c%d-t%d-%d" % (self.cycle, self.idx, n)
        if op == "create":
            name = PREFIX + "vm-" + tag
            self.pending = Pending("create", value=name)
            ref = self.call("VM.create", dict(self.base, name_label=name))
            self.vms[ref] = VmState(name)
            return True
        vm = self.rnd.choice(sorted(self.vms))
        st = self.vms[vm]
        if op == "name":
            name = PREFIX + "name-" + tag
            self.pending = Pending("name", vm, name)
            self.call("VM.set_name_label", vm, name)
            st.name = name
        elif op == "oc":
            key, value = PREFIX + tag, str(n)
            self.pending = Pending("oc", vm, value, key)
            self.call("VM.add_to_other_config", vm, key, value)
            st.oc[key] = value
        elif op == "vbd":
            if len(st.vbds) >= MAX_VBDS:
                return False
            self.pending = Pending("vbd", vm)
            ref = self.call("VBD.create", {
                "VM": vm, "VDI": NULL, "userdevice": "autodetect",
                "bootable": False, "mode": "RO", "type": "CD",
                "empty": True, "other_config": {}, "qos_algorithm_type": "",
                "qos_algorithm_params": {}})
            st.vbds.add(ref)
        elif op == "vif":
            dev = st.free_vif_device()
            if dev is None:
                return False
            self.pending = Pending("vif", vm, dev)
            ref = self.call("VIF.create", {
                "device": dev, "network": self.net, "VM": vm, "MAC": "",
                "MTU": "1500", "other_config": {}, "qos_algorithm_type": "",
                "qos_algorithm_params": {}})
            st.vifs[ref] = dev
        elif op == "destroy":
            self.pending = Pending("destroy", vm)
            self.call("VM.destroy", vm)
            del self.vms[vm]
            self.destroyed.append((vm, set(st.vbds), set(st.vifs)))
        return True

    def run(self):
        try:
            self.sref = self.api.call("session.login_with_password", "root",
                                      self.x.password)
        except GONE:
            self.ready.set()
            return
        except XapiError as e:
            self.unexpected.append(("login", e.details))
            self.ready.set()
            return
        self.ready.set()
        n = 0
        while True:
            n += 1
            try:
                called = self.step(n)
            except XapiError as e:
                self.unexpected.append((repr(self.pending), e.details))
                return
            except GONE:
                return  # 'pending' is the call in flight, if any
            self.pending = None
            self.acks += called


def check_db(x):
    """`xapid --check-db` on the state directory; its output on failure."""
    cmd = [x.bin, "--state-dir", x.state_dir, "--check-db"]
    db = getattr(x, "db", None)
    if db is not None:
        cmd += ["--db", db.uri]
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=120)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0 and out.strip().endswith("OK"), \
        "xapid --check-db: rc=%d\n%s%s" % (r.returncode, out,
                                            r.stderr.decode("utf-8",
                                                            "replace"))


# ---- consistency through the API --------------------------------------------


def all_records(s, classes):
    """{class: {ref: record}} of every class whose get_all_records works."""
    out = {}
    for cls in classes:
        try:
            out[cls] = s.call("%s.get_all_records" % cls)
        except XapiError:
            pass  # no such message, or not implemented
    return out


def api_integrity_problems(s, classes):
    """Dangling references and computed sets that disagree with their
    source fields, as a list of strings."""
    recs = all_records(s, classes)
    problems = []
    for cls, rows in recs.items():
        for f in classes[cls].get("fields", []):
            ty, name = f["type"], f["name"]
            words = ty.split()
            if len(words) < 2 or words[1] != "ref":
                continue
            target = words[0]
            if target not in recs:
                continue  # a class without records to check against
            if ty == target + " ref":
                for ref, r in rows.items():
                    v = r.get(name, NULL)
                    if v != NULL and v not in recs[target]:
                        problems.append("%s %s: %s = %s names no %s"
                                        % (cls, ref, name, v, target))
            elif ty == target + " ref set":
                for ref, r in rows.items():
                    for v in r.get(name, []):
                        if v not in recs[target]:
                            problems.append("%s %s: %s lists %s, no %s"
                                            % (cls, ref, name, v, target))
                src = f.get("computed_from")
                if src and target in recs:
                    scls, sfield = src.split(".", 1)
                    back = {}
                    for sref, sr in recs[scls].items():
                        back.setdefault(sr.get(sfield, NULL), set()).add(sref)
                    for ref, r in rows.items():
                        got, want = set(r.get(name, [])), back.get(ref, set())
                        if got != want:
                            problems.append(
                                "%s %s: %s is %s but %s.%s says %s"
                                % (cls, ref, name, sorted(got), scls, sfield,
                                   sorted(want)))
    return problems


# ---- the expected state against what is there ------------------------------


class Tally:
    def __init__(self):
        self.acks = 0
        self.lost = []        # acknowledged writes not found
        self.phantoms = []    # changes nobody asked for
        self.inflight = 0
        self.inflight_applied = 0


def verify(s, writers, destroyed, tally):
    """Compares the server with every client's expected state, adopting the
    outcome of each in-flight call."""
    vms = s.VM.get_all_records()
    vbds = s.VBD.get_all_records()
    vifs = s.VIF.get_all_records()
    lost, phantoms = tally.lost, tally.phantoms
    known = set()
    for w in writers:
        p = w.pending
        if p is not None:
            tally.inflight += 1
        applied = False
        for vm, st in list(w.vms.items()):
            known.add(vm)
            mine = p is not None and p.vm == vm
            if vm not in vms:
                if mine and p.kind == "destroy":
                    applied = True
                    del w.vms[vm]
                    destroyed.append((vm, set(st.vbds), set(st.vifs)))
                else:
                    lost.append("VM %s (%s) is gone" % (vm, st.name))
                continue
            r = vms[vm]
            if r["name_label"] != st.name:
                if mine and p.kind == "name" and r["name_label"] == p.value:
                    applied = True
                    st.name = p.value
                else:
                    lost.append("VM %s is named %r, not %r"
                                % (vm, r["name_label"], st.name))
            oc = r["other_config"]
            for k, v in st.oc.items():
                if oc.get(k) != v:
                    lost.append("VM %s other_config[%s] = %r, not %r"
                                % (vm, k, oc.get(k), v))
            for k, v in oc.items():
                if k.startswith(PREFIX) and k not in st.oc:
                    if mine and p.kind == "oc" and k == p.key \
                            and v == p.value:
                        applied = True
                        st.oc[k] = v
                    else:
                        phantoms.append("VM %s other_config[%s] = %r"
                                        % (vm, k, v))
            for field, have, kind in (("VBDs", st.vbds, "vbd"),
                                      ("VIFs", st.vifs, "vif")):
                got = set(r[field])
                for d in set(have) - got:
                    lost.append("VM %s lost %s %s" % (vm, kind, d))
                extra = got - set(have)
                if mine and p.kind == kind and len(extra) == 1:
                    applied = True
                    ref = extra.pop()
                    if kind == "vbd":
                        st.vbds.add(ref)
                    else:
                        st.vifs[ref] = vifs[ref]["device"]
                for d in extra:
                    phantoms.append("VM %s has unknown %s %s" % (vm, kind, d))
        if p is not None and p.kind == "create":
            made = [ref for ref, r in vms.items()
                    if r["name_label"] == p.value]
            if len(made) > 1:
                phantoms.append("VM %r made %d times" % (p.value, len(made)))
            elif made:
                applied = True
                st = VmState(p.value)
                r = vms[made[0]]
                st.vbds = set(r["VBDs"])
                st.vifs = {v: vifs[v]["device"] for v in r["VIFs"]}
                w.vms[made[0]] = st
                known.add(made[0])
        if applied:
            tally.inflight_applied += 1
        destroyed.extend(w.destroyed)
        w.destroyed = []
    for vm, vb, vi in destroyed:
        if vm in vms:
            lost.append("destroyed VM %s is back" % vm)
        for d in vb:
            if d in vbds:
                lost.append("VBD %s of destroyed VM %s is back" % (d, vm))
        for d in vi:
            if d in vifs:
                lost.append("VIF %s of destroyed VM %s is back" % (d, vm))
    for vm, r in vms.items():
        if r["name_label"].startswith(PREFIX) and vm not in known:
            phantoms.append("unknown VM %s %r" % (vm, r["name_label"]))


def test_acknowledged_writes_survive_sigkill(xapid_factory):
    x = xapid_factory.start()
    s = x.login()
    classes = xapilib.load_schema_classes()
    tmpl = s.VM.get_by_name_label("Other install media")[0]
    base = s.VM.get_record(tmpl)
    for k in ("uuid", "allowed_operations", "current_operations", "consoles",
              "VBDs", "VIFs", "metrics", "guest_metrics"):
        base.pop(k, None)
    base.update(is_a_template=False, other_config={})
    nets = s.network.get_all()
    net = nets[0] if nets else s.network.create({
        "name_label": "crash net", "name_description": "", "MTU": "1500",
        "other_config": {}, "bridge": "xenbr9", "managed": True, "tags": []})
    owned = [{} for _ in range(THREADS)]
    destroyed = []
    tally = Tally()
    rnd = random.Random()
    seed = rnd.randrange(1 << 30)
    t0 = time.monotonic()
    for cycle in range(CYCLES):
        writers = [Writer(x, i, cycle, owned[i], base, net,
                          seed + cycle * THREADS + i)
                   for i in range(THREADS)]
        for w in writers:
            w.start()
        for w in writers:
            w.ready.wait(30)
        # mostly mid-load, sometimes just after the first writes
        time.sleep(rnd.uniform(0.05, 0.3) if rnd.random() < 0.2
                   else rnd.uniform(0.3, 1.5))
        x.kill9()
        for w in writers:
            w.join(60)
            assert not w.is_alive(), "a client hangs after the kill"
            assert not w.unexpected, (cycle, w.idx, w.unexpected)
        tally.acks += sum(w.acks for w in writers)
        check_db(x)
        x.start()
        s = x.login()
        verify(s, writers, destroyed, tally)
        assert not tally.lost, (cycle, seed, tally.lost[:20])
        assert not tally.phantoms, (cycle, seed, tally.phantoms[:20])
        problems = api_integrity_problems(s, classes)
        assert not problems, (cycle, problems[:20])
    x.stop_clean()
    check_db(x)
    summary = ("crash: %d cycles in %.0f s, %d acknowledged writes, %d lost, "
               "%d phantom, %d in flight at a kill (%d of them applied), "
               "%d VMs alive, seed %d"
               % (CYCLES, time.monotonic() - t0, tally.acks, len(tally.lost),
                  len(tally.phantoms), tally.inflight,
                  tally.inflight_applied, sum(len(o) for o in owned), seed))
    print(summary, file=sys.stderr)
    assert tally.acks >= CYCLES * 20, summary

"""Acknowledged writes survive kill -9: client threads write while the
server is killed at a random moment; after a restart on the same state
directory every write that was answered with Success is there."""

import http.client
import random
import threading
import time

import xapilib
from xapilib import XapiError

THREADS = 4
CYCLES = 5


class Writer(threading.Thread):
    """Writes to its own VM until the server goes away, keeping a log of
    what was acknowledged and what was in flight when it died."""

    def __init__(self, x, session_ref, vm, tag, template_rec):
        super().__init__(daemon=True)
        self.api = x.api(timeout=20)
        self.sref = session_ref
        self.vm = vm
        self.tag = tag
        self.tmpl = template_rec
        self.last_name = None      # last acknowledged name_label
        self.pending_name = None   # sent, no answer
        self.keys = {}             # acknowledged other_config keys
        self.created = {}          # acknowledged VM.create: ref -> name
        self.pending_create = None
        self.acks = 0
        self.unexpected = []

    def run(self):
        rnd = random.Random(self.tag)
        n = 0
        while True:
            n += 1
            op = rnd.choice(("name", "name", "key", "create"))
            try:
                if op == "name":
                    v = "%s-n%d" % (self.tag, n)
                    self.pending_name = v
                    self.api.call("VM.set_name_label", self.sref, self.vm, v)
                    self.last_name, self.pending_name = v, None
                elif op == "key":
                    k = "%s-k%d" % (self.tag, n)
                    self.api.call("VM.add_to_other_config", self.sref,
                                  self.vm, k, str(n))
                    self.keys[k] = str(n)
                else:
                    name = "%s-c%d" % (self.tag, n)
                    rec = dict(self.tmpl, name_label=name)
                    self.pending_create = name
                    ref = self.api.call("VM.create", self.sref, rec)
                    self.created[ref] = name
                    self.pending_create = None
                self.acks += 1
            except XapiError as e:
                self.unexpected.append(e.details)
                return
            except (OSError, http.client.HTTPException):
                return  # the server is gone


def test_acknowledged_writes_survive_kill9(xapid_factory):
    x = xapid_factory.start()
    s = x.login()
    tmpl = s.VM.get_by_name_label("Other install media")[0]
    base = s.VM.get_record(tmpl)
    base.update(is_a_template=False, other_config={})
    vms = [s.VM.create(dict(base, name_label="dur-%d" % i))
           for i in range(THREADS)]
    history = []  # every writer of every cycle, checked after each restart
    rnd = random.Random()
    total_acks = 0
    for cycle in range(CYCLES):
        s = x.login()
        writers = [Writer(x, s.ref, vms[i], "c%dt%d" % (cycle, i), base)
                   for i in range(THREADS)]
        for w in writers:
            w.start()
        time.sleep(rnd.uniform(0.3, 1.2))
        x.kill9()
        for w in writers:
            w.join(30)
            assert not w.is_alive()
            assert not w.unexpected, w.unexpected
        history.append(writers)
        cycle_acks = sum(w.acks for w in writers)
        assert cycle_acks > 0, "no write was acknowledged before the kill"
        total_acks += cycle_acks
        x.start()
        s = x.login()
        recs = s.VM.get_all_records()
        for i, vm in enumerate(vms):
            assert vm in recs
        # The newest writer of each VM decides its name.
        for w in writers:
            name = recs[w.vm]["name_label"]
            if w.last_name is not None:
                assert name in (w.last_name, w.pending_name), \
                    (cycle, name, w.last_name, w.pending_name)
        # Keys and created VMs of every cycle so far are all still there.
        for ws in history:
            for w in ws:
                oc = recs[w.vm]["other_config"]
                for k, v in w.keys.items():
                    assert oc.get(k) == v, (k, v, w.tag)
                for ref, name in w.created.items():
                    assert ref in recs, (ref, name)
                    assert recs[ref]["name_label"] == name
                    assert s.VM.get_by_uuid(recs[ref]["uuid"]) == ref
        # An unacknowledged create is either absent or complete.
        names = [v["name_label"] for v in recs.values()]
        for w in writers:
            if w.pending_create:
                assert names.count(w.pending_create) <= 1
    assert total_acks >= CYCLES * 10, total_acks

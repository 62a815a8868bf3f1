"""Pools to migrate in and disks with known content, for the migration
tests (test_migration.py, test_migration_kvm.py, test_migrate_send.py,
test_storage_motion_kvm.py)."""

import hashlib
import http.client
import time
import urllib.parse

import poollib
from poollib import wait_for


def add_host(pool, env=None, extra_args=()):
    """One more host of 'pool' ('env': more environment for it, such as
    simulator knobs or XAPID_MIG_FAULTS; 'extra_args': more arguments)."""
    # more HTTP threads than the default (one per CPU): a master thread
    # blocked in a forwarded call must not starve the replication
    # stream whose acknowledgements its own commits wait for
    return pool.add(1, extra_args=["--threads", "16"] + list(extra_args),
                    env=env)[0]


def host_ref(api, address):
    for h in api.host.get_all():
        if api.host.get_address(h) == address:
            return h
    raise AssertionError("no host at %s" % address)


def formed(pool, envs, extra_args=(), per_host=None):
    """A pool of one host per entry of 'envs' (its environment, as for
    add_host), each with 'extra_args' and, when given, per_host[i]; the
    first is the master.  Returns (hosts, a session on the master, the
    hosts' refs) once every host is live."""
    hosts = [add_host(pool, env, list(extra_args) +
                      (list(per_host[i]) if per_host else []))
             for i, env in enumerate(envs)]
    for m in hosts[1:]:
        poollib.join(m, hosts[0])
    api = hosts[0].login()
    refs = [host_ref(api, h.address) for h in hosts]
    # every member heard, every host live: migrations check liveness
    wait_for(lambda: all(api.host_metrics.get_live(api.host.get_metrics(r))
                         for r in refs))
    return hosts, api, refs


def kvm_pool(pool, envs, per_host=None):
    """formed() of hosts running QEMU guests (--hypervisor kvm)."""
    return formed(pool, envs, ["--hypervisor", "kvm"], per_host)


def local_sr(api, host):
    """The host's local ext SR."""
    return [api.PBD.get_SR(p) for p in api.PBD.get_all()
            if api.PBD.get_host(p) == host
            and api.SR.get_type(api.PBD.get_SR(p)) == "ext"][0]


def pattern(size, seed):
    """'size' bytes that differ with 'seed', every third 64 KiB block
    zero: holes must come back as zeros."""
    out = bytearray()
    block = hashlib.sha256(b"%d" % seed).digest() * 2048  # 64 KiB
    i = 0
    while len(out) < size:
        out += bytes(len(block)) if i % 3 == 1 else block
        i += 1
    return bytes(out[:size])


def http_call(host, sess, method, path, query, body=None):
    """An HTTP request to 'host' under session 'sess': (status, body)."""
    q = urllib.parse.urlencode(dict(query, session_id=sess.ref))
    c = http.client.HTTPConnection(host.address, host.port, timeout=120)
    try:
        c.request(method, path + "?" + q, body=body)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def disk_with(api, host, sr, data, name="moving disk"):
    """A new VDI of SR 'sr' holding 'data', imported through 'host'."""
    vdi = api.VDI.create({"SR": sr, "virtual_size": str(len(data)),
                          "name_label": name, "type": "user",
                          "sharable": False, "read_only": False,
                          "other_config": {}})
    task = api.task.create("import", "")
    status, body = http_call(host, api, "PUT", "/import_raw_vdi",
                             {"vdi": vdi, "format": "raw", "task_id": task},
                             data)
    assert status == 200, body[:200]
    wait_for(lambda: api.task.get_status(task) != "pending", timeout=60)
    assert api.task.get_status(task) == "success", \
        api.task.get_error_info(task)
    return vdi


def content(host, api, vdi):
    """The VDI's bytes, read on 'host' (its own session: the master's
    sessions are the master's)."""
    status, body = http_call(host, host.local_session(), "GET",
                             "/export_raw_vdi",
                             {"vdi": api.VDI.get_uuid(vdi), "format": "raw"})
    assert status == 200, body[:200]
    return body


def the_disk(api, vm):
    """The VDI of the VM's one VBD."""
    (vbd,) = api.VM.get_VBDs(vm)
    return api.VBD.get_VDI(vbd)


def gone(api, vdi):
    try:
        api.VDI.get_uuid(vdi)
    except Exception as e:  # noqa: BLE001 - HANDLE_INVALID expected
        return "HANDLE_INVALID" in str(e)
    return False


def watch_task(api, task, vm, timeout=60, every=0.05):
    """Samples the task's progress and the keys of the VM's
    current_operations until the task is no longer pending (or
    'timeout'): (set of progress values, set of operation keys)."""
    progress, op_keys = set(), set()
    deadline = time.monotonic() + timeout
    while (api.task.get_status(task) == "pending"
           and time.monotonic() < deadline):
        progress.add(api.task.get_progress(task))
        op_keys.update(api.VM.get_current_operations(vm))
        time.sleep(every)
    return progress, op_keys

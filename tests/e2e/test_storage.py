"""Storage end to end: SRs on real directories (ext, file, iso, nfs), VDI
operations on real qcow2/raw images, and the HTTP data paths
(/import_raw_vdi, /export_raw_vdi, /export, /import) compared byte for
byte with what went in."""

import hashlib
import http.client
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.parse

import pytest

import xapilib
from xapilib import XapiError

MiB = 1024 * 1024

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None,
                                reason="qemu-img (qemu-utils) is not installed")


@pytest.fixture(scope="module")
def api(session):
    return session


def local_sr(api):
    for ref, rec in api.SR.get_all_records().items():
        if rec["name_label"] == "Local storage":
            return ref
    raise AssertionError("no Local storage SR")


def sr_dir(xapid, api, sr):
    pbd = api.SR.get_PBDs(sr)[0]
    dc = api.PBD.get_device_config(pbd)
    return dc.get("location") or dc.get("path") or os.path.join(
        xapid.state_dir, "sr", api.SR.get_uuid(sr))


def new_vdi(api, sr, size, name="disk"):
    return api.VDI.create({"SR": sr, "virtual_size": str(size),
                           "type": "user", "sharable": False,
                           "read_only": False, "other_config": {},
                           "name_label": name})


def pattern(size, seed=1, holes=True):
    """Deterministic content with zero stretches (sparse-friendly)."""
    out = bytearray()
    i = 0
    while len(out) < size:
        block = hashlib.sha256(b"%d-%d" % (seed, i)).digest() * 2048  # 64K
        if holes and i % 3 == 1:
            block = bytes(len(block))
        out += block
        i += 1
    return bytes(out[:size])


def task_wait(api, task, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = api.task.get_status(task)
        if st not in ("pending", "cancelling"):
            return st
        time.sleep(0.05)
    raise AssertionError("task %s still pending" % task)


def put(xapid, api, path, query, body, task=None, headers=None):
    q = dict(query, session_id=api.ref)
    if task:
        q["task_id"] = task
    c = http.client.HTTPConnection("127.0.0.1", xapid.port, timeout=120)
    try:
        c.request("PUT", path + "?" + urllib.parse.urlencode(q), body=body,
                  headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def get(xapid, api, path, query, task=None):
    q = dict(query, session_id=api.ref)
    if task:
        q["task_id"] = task
    c = http.client.HTTPConnection("127.0.0.1", xapid.port, timeout=120)
    try:
        c.request("GET", path + "?" + urllib.parse.urlencode(q))
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def import_raw(xapid, api, vdi, data, fmt="raw"):
    task = api.task.create("import", "")
    status, body = put(xapid, api, "/import_raw_vdi",
                       {"vdi": vdi, "format": fmt}, data, task)
    st = task_wait(api, task)
    return status, st, api.task.get_error_info(task)


def export_raw(xapid, api, vdi, fmt="raw"):
    status, body = get(xapid, api, "/export_raw_vdi",
                       {"vdi": api.VDI.get_uuid(vdi), "format": fmt})
    assert status == 200, body[:200]
    return body


def sha(b):
    return hashlib.sha256(b).hexdigest()


# ---- the local SR and VDIs ------------------------------------------------


def test_local_sr_is_ext_with_qcow2(xapid, api):
    sr = local_sr(api)
    assert api.SR.get_type(sr) == "ext"
    vdi = new_vdi(api, sr, 4 * MiB)
    d = sr_dir(xapid, api, sr)
    path = os.path.join(d, api.VDI.get_uuid(vdi) + ".qcow2")
    with open(path, "rb") as f:
        assert f.read(4) == b"QFI\xfb"
    assert int(api.VDI.get_virtual_size(vdi)) == 4 * MiB
    assert "ext" in api.SR.get_supported_types()
    api.VDI.destroy(vdi)
    assert not os.path.exists(path)


def test_import_export_roundtrip(xapid, api):
    sr = local_sr(api)
    vdi = new_vdi(api, sr, 8 * MiB)
    data = pattern(8 * MiB)
    status, st, info = import_raw(xapid, api, vdi, data)
    assert (status, st) == (200, "success"), info
    assert sha(export_raw(xapid, api, vdi)) == sha(data)
    # a short raw image: the rest of the disk reads as zeros
    status, st, info = import_raw(xapid, api, vdi, data[:3 * MiB])
    assert st == "success", info
    assert sha(export_raw(xapid, api, vdi)) == sha(data[:3 * MiB] +
                                                    bytes(5 * MiB))
    api.VDI.destroy(vdi)


def test_snapshot_clone_chain(xapid, api):
    sr = local_sr(api)
    d = sr_dir(xapid, api, sr)
    vdi = new_vdi(api, sr, 8 * MiB)
    old, new = pattern(8 * MiB, 2), pattern(8 * MiB, 3)
    assert import_raw(xapid, api, vdi, old)[1] == "success"
    snap = api.VDI.snapshot(vdi, {})
    assert api.VDI.get_is_a_snapshot(snap)
    assert api.VDI.get_snapshot_of(snap) == vdi
    # the VDI moves on; the snapshot keeps the old content
    vdi_data = bytearray(old)
    vdi_data[MiB:2 * MiB] = new[:MiB]
    # write through the chain: qcow2 import of a whole new content
    assert import_raw(xapid, api, vdi, bytes(vdi_data))[1] == "success"
    assert sha(export_raw(xapid, api, snap)) == sha(old)
    assert sha(export_raw(xapid, api, vdi)) == sha(bytes(vdi_data))
    # a second snapshot, then a clone of the first: a deeper tree
    snap2 = api.VDI.snapshot(vdi, {})
    clone = api.VDI.clone(snap, {})
    assert not api.VDI.get_is_a_snapshot(clone)
    assert sha(export_raw(xapid, api, clone)) == sha(old)
    # destroying VDIs in the middle keeps every other one intact
    api.VDI.destroy(snap)
    assert sha(export_raw(xapid, api, clone)) == sha(old)
    assert sha(export_raw(xapid, api, snap2)) == sha(bytes(vdi_data))
    api.VDI.destroy(vdi)
    assert sha(export_raw(xapid, api, snap2)) == sha(bytes(vdi_data))
    assert sha(export_raw(xapid, api, clone)) == sha(old)
    api.VDI.destroy(snap2)
    api.VDI.destroy(clone)
    # nothing is left behind: no bases, no temporaries
    left = [f for f in os.listdir(d)
            if f.startswith(".base-") or f.startswith(".tmp-")]
    assert left == []


def test_resize_and_copy(xapid, api):
    sr = local_sr(api)
    vdi = new_vdi(api, sr, 4 * MiB)
    data = pattern(4 * MiB, 4)
    assert import_raw(xapid, api, vdi, data)[1] == "success"
    api.VDI.resize(vdi, str(6 * MiB))
    assert int(api.VDI.get_virtual_size(vdi)) == 6 * MiB
    assert sha(export_raw(xapid, api, vdi)) == sha(data + bytes(2 * MiB))
    with pytest.raises(XapiError) as e:
        api.VDI.resize(vdi, str(2 * MiB))
    assert e.value.details[0] == "VDI_TOO_SMALL"
    copy = api.VDI.copy(vdi, sr, "OpaqueRef:NULL", "OpaqueRef:NULL")
    assert sha(export_raw(xapid, api, copy)) == sha(data + bytes(2 * MiB))
    api.VDI.destroy(copy)
    api.VDI.destroy(vdi)


@pytest.mark.parametrize("fmt", ["qcow2", "vhd"])
def test_formats_roundtrip(xapid, api, fmt):
    sr = local_sr(api)
    a = new_vdi(api, sr, 4 * MiB)
    data = pattern(4 * MiB, 5)
    assert import_raw(xapid, api, a, data)[1] == "success"
    image = export_raw(xapid, api, a, fmt)
    if fmt == "qcow2":
        assert image[:4] == b"QFI\xfb"
    else:
        assert image[:8] == b"conectix"
    b = new_vdi(api, sr, 4 * MiB)
    status, st, info = import_raw(xapid, api, b, image, fmt)
    assert st == "success", info
    assert sha(export_raw(xapid, api, b)) == sha(data)
    api.VDI.destroy(a)
    api.VDI.destroy(b)


# ---- bad input -------------------------------------------------------------


def test_truncated_and_corrupt_uploads_leave_vdi_unchanged(xapid, api):
    sr = local_sr(api)
    d = sr_dir(xapid, api, sr)
    vdi = new_vdi(api, sr, 4 * MiB)
    data = pattern(4 * MiB, 6)
    assert import_raw(xapid, api, vdi, data)[1] == "success"

    # a body that stops before its Content-Length
    task = api.task.create("import", "")
    q = urllib.parse.urlencode({"vdi": vdi, "session_id": api.ref,
                                "task_id": task})
    c = http.client.HTTPConnection("127.0.0.1", xapid.port, timeout=30)
    c.putrequest("PUT", "/import_raw_vdi?" + q)
    c.putheader("Content-Length", str(4 * MiB))
    c.endheaders()
    c.send(pattern(MiB, 7))
    # (closing at once can leave libmicrohttpd 0.9.75 waiting for its idle
    # timeout; a client that dies mid-upload is rarely that quick)
    time.sleep(1)
    c.close()
    assert task_wait(api, task) == "failure"
    assert api.task.get_error_info(task)[0] == "VDI_IO_ERROR"

    # random bytes claiming to be qcow2
    status, st, info = import_raw(xapid, api, vdi, pattern(MiB, 8), "qcow2")
    assert st == "failure" and info[0] == "VDI_IO_ERROR", info
    # a truncated qcow2
    img = export_raw(xapid, api, vdi, "qcow2")
    status, st, info = import_raw(xapid, api, vdi, img[:len(img) // 2],
                                  "qcow2")
    assert st == "failure", info
    # more bytes than the VDI holds
    status, st, info = import_raw(xapid, api, vdi, pattern(5 * MiB, 9))
    assert st == "failure" and info[0] == "VDI_IO_ERROR", info

    assert sha(export_raw(xapid, api, vdi)) == sha(data)
    time.sleep(0.2)
    assert [f for f in os.listdir(d) if f.startswith(".tmp-")] == []
    api.VDI.destroy(vdi)


def test_sr_full_leaves_nothing(xapid, api):
    sr = local_sr(api)
    d = sr_dir(xapid, api, sr)
    before = sorted(os.listdir(d))
    with pytest.raises(XapiError) as e:
        new_vdi(api, sr, 1 << 60)
    assert e.value.details[0] == "SR_FULL"
    assert int(e.value.details[1]) == 1 << 60
    assert sorted(os.listdir(d)) == before


def test_paths_cannot_escape_the_sr(xapid, api):
    sr = local_sr(api)
    d = sr_dir(xapid, api, sr)
    for bad in ["../../etc/passwd", "/etc/passwd", ".base-x", "a/b"]:
        with pytest.raises(XapiError):
            api.VDI.introduce("", "x", "", sr, "user", False, False, {}, bad,
                              {}, {}, True, "0", "0", "", False,
                              "19700101T00:00:00Z", "OpaqueRef:NULL")
    # a symlink dropped into the SR is never followed
    secret = os.path.join(xapid.workdir, "secret.img")
    with open(secret, "wb") as f:
        f.write(b"s" * 4096)
    os.symlink(secret, os.path.join(d, "sneaky.img"))
    api.SR.scan(sr)
    locs = [api.VDI.get_location(v) for v in api.SR.get_VDIs(sr)]
    assert "sneaky" not in locs
    os.unlink(os.path.join(d, "sneaky.img"))


def test_scan_finds_dropped_image(xapid, api):
    sr = local_sr(api)
    d = sr_dir(xapid, api, sr)
    u = "0e2b6a4a-5d4f-4b8e-9a53-6b0c0c0f0001"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                    os.path.join(d, u + ".qcow2"), str(3 * MiB)], check=True)
    api.SR.scan(sr)
    vdi = api.VDI.get_by_uuid(u)
    assert api.VDI.get_SR(vdi) == sr
    assert int(api.VDI.get_virtual_size(vdi)) == 3 * MiB
    assert sha(export_raw(xapid, api, vdi)) == sha(bytes(3 * MiB))
    # forget keeps the image; scan brings it back; an image that goes
    # away takes its record with it
    api.VDI.forget(vdi)
    api.SR.scan(sr)
    vdi = api.VDI.get_by_uuid(u)
    os.unlink(os.path.join(d, u + ".qcow2"))
    api.SR.scan(sr)
    with pytest.raises(XapiError):
        api.VDI.get_by_uuid(u)


# ---- other SR types --------------------------------------------------------


def this_host(api):
    return list(api.host.get_all())[0]


def test_file_sr_lifecycle(xapid, api):
    d = tempfile.mkdtemp(prefix="xapid-file-sr-", dir=xapid.workdir)
    host = this_host(api)
    sr = api.SR.create(host, {"location": d}, "0", "shared dir", "", "file",
                       "user", True, {})
    assert api.SR.get_shared(sr)
    pbds = api.SR.get_PBDs(sr)
    assert any(api.PBD.get_currently_attached(p) for p in pbds)
    assert "<UUID>%s</UUID>" % api.SR.get_uuid(sr) in api.SR.probe(
        host, {"location": d}, "file", {})
    vdi = new_vdi(api, sr, 2 * MiB)
    data = pattern(2 * MiB, 10)
    assert import_raw(xapid, api, vdi, data)[1] == "success"
    with pytest.raises(XapiError) as e:
        api.SR.destroy(sr)
    assert e.value.details[0] == "SR_HAS_PBD"
    local = [p for p in pbds if api.PBD.get_host(p) == host][0]
    api.PBD.unplug(local)
    assert not api.PBD.get_currently_attached(local)
    with pytest.raises(XapiError):
        new_vdi(api, sr, MiB)
    # forget and introduce it back, as a second host would
    uuid = api.SR.get_uuid(sr)
    vuuid = api.VDI.get_uuid(vdi)
    api.SR.forget(sr)
    sr = api.SR.introduce(uuid, "shared dir", "", "file", "user", True, {})
    pbd = api.PBD.create({"host": host, "SR": sr,
                          "device_config": {"location": d}})
    with pytest.raises(XapiError) as e:
        api.PBD.create({"host": host, "SR": sr,
                        "device_config": {"location": d}})
    assert e.value.details[0] == "PBD_EXISTS"
    api.PBD.plug(pbd)
    api.SR.scan(sr)
    vdi = api.VDI.get_by_uuid(vuuid)
    assert sha(export_raw(xapid, api, vdi)) == sha(data)
    api.PBD.unplug(pbd)
    api.SR.destroy(sr)
    assert not os.path.exists(d)


def test_iso_sr_and_cd(xapid, api):
    d = tempfile.mkdtemp(prefix="xapid-iso-", dir=xapid.workdir)
    with open(os.path.join(d, "tools.iso"), "wb") as f:
        f.write(pattern(MiB, 11))
    with open(os.path.join(d, "notes.txt"), "w") as f:
        f.write("not an image")
    host = this_host(api)
    sr = api.SR.create(host, {"location": d}, "0", "ISOs", "", "iso", "iso",
                       False, {})
    assert api.SR.get_content_type(sr) == "iso"
    vdis = api.SR.get_VDIs(sr)
    assert [api.VDI.get_name_label(v) for v in vdis] == ["tools.iso"]
    iso = vdis[0]
    assert api.VDI.get_read_only(iso)
    with pytest.raises(XapiError) as e:
        new_vdi(api, sr, MiB)
    assert e.value.details[0] == "SR_OPERATION_NOT_SUPPORTED"
    assert sha(export_raw(xapid, api, iso)) == sha(pattern(MiB, 11))
    # a second ISO dropped in appears on scan
    shutil.copy(os.path.join(d, "tools.iso"), os.path.join(d, "more.iso"))
    api.SR.scan(sr)
    assert len(api.SR.get_VDIs(sr)) == 2
    # a CD drive of a VM takes and gives back an ISO
    tmpl = [r for r in api.VM.get_by_name_label("Debian Bookworm 12")][0]
    vm = api.VM.clone(tmpl, "cd-vm")
    cd = api.VBD.create({"VM": vm, "VDI": "OpaqueRef:NULL", "userdevice": "3",
                         "bootable": False, "mode": "RO", "type": "CD",
                         "empty": True, "other_config": {},
                         "qos_algorithm_type": "",
                         "qos_algorithm_params": {}})
    api.VBD.insert(cd, iso)
    assert api.VBD.get_VDI(cd) == iso and not api.VBD.get_empty(cd)
    api.VBD.eject(cd)
    assert api.VBD.get_empty(cd)
    api.VM.destroy(vm)
    pbd = api.SR.get_PBDs(sr)[0]
    api.PBD.unplug(pbd)
    api.SR.destroy(sr)
    assert os.path.exists(os.path.join(d, "tools.iso")), "ISOs are the user's"


def test_nfs_sr(xapid, api):
    host = this_host(api)
    try:
        sr = api.SR.create(host, {"server": "127.0.0.1",
                                  "serverpath": "/nonexistent-export"}, "0",
                           "nfs", "", "nfs", "user", True, {})
    except XapiError as e:
        pytest.skip("the kernel cannot mount NFS here: %s" % (e.details,))
    api.PBD.unplug(api.SR.get_PBDs(sr)[0])
    api.SR.destroy(sr)


def test_unplug_refused_while_vm_runs(xapid, api):
    sr = local_sr(api)
    tmpl = api.VM.get_by_name_label("Debian Bookworm 12")[0]
    vm = api.VM.clone(tmpl, "busy")
    api.VM.provision(vm)
    api.VM.start(vm, False, False)
    pbd = api.SR.get_PBDs(sr)[0]
    with pytest.raises(XapiError) as e:
        api.PBD.unplug(pbd)
    assert e.value.details[0] == "VDI_IN_USE"
    api.VM.hard_shutdown(vm)
    for vbd in api.VM.get_VBDs(vm):
        vdi = api.VBD.get_VDI(vbd)
        if vdi != "OpaqueRef:NULL":
            api.VDI.destroy(vdi)
    api.VM.destroy(vm)


# ---- XVA -------------------------------------------------------------------

M64 = (1 << 64) - 1
P1, P2, P3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9
P4, P5 = 0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M64


def _round(acc, lane):
    return (_rotl((acc + lane * P2) & M64, 31) * P1) & M64


def xxh64(data, seed=0):
    """XXH64 from the specification, to check the server's independently."""
    n = len(data)
    i = 0
    if n >= 32:
        v = [(seed + P1 + P2) & M64, (seed + P2) & M64, seed,
             (seed - P1) & M64]
        while i + 32 <= n:
            for k in range(4):
                v[k] = _round(v[k], int.from_bytes(data[i + 8 * k:
                                                        i + 8 * k + 8],
                                                   "little"))
            i += 32
        acc = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) +
               _rotl(v[3], 18)) & M64
        for k in range(4):
            acc = (((acc ^ _round(0, v[k])) * P1) + P4) & M64
    else:
        acc = (seed + P5) & M64
    acc = (acc + n) & M64
    while i + 8 <= n:
        acc ^= _round(0, int.from_bytes(data[i:i + 8], "little"))
        acc = (_rotl(acc, 27) * P1 + P4) & M64
        i += 8
    if i + 4 <= n:
        acc ^= (int.from_bytes(data[i:i + 4], "little") * P1) & M64
        acc = (_rotl(acc, 23) * P2 + P3) & M64
        i += 4
    while i < n:
        acc ^= (data[i] * P5) & M64
        acc = (_rotl(acc, 11) * P1) & M64
        i += 1
    acc ^= acc >> 33
    acc = (acc * P2) & M64
    acc ^= acc >> 29
    acc = (acc * P3) & M64
    acc ^= acc >> 32
    return acc


def test_xxh64_reference_values():
    assert xxh64(b"") == 0xEF46DB3751D8E999
    assert xxh64(b"abc") == 0x44BC2CF5AD770999


def small_vm(api, name):
    tmpl = api.VM.get_by_name_label("Debian Bookworm 12")[0]
    vm = api.VM.clone(tmpl, name)
    api.VM.provision(vm)
    return vm


def vm_disks(api, vm):
    out = []
    for vbd in api.VM.get_VBDs(vm):
        if api.VBD.get_type(vbd) == "Disk":
            out.append((api.VBD.get_userdevice(vbd), api.VBD.get_VDI(vbd)))
    return sorted(out)


def export_xva(xapid, api, vm):
    status, body = get(xapid, api, "/export", {"uuid": api.VM.get_uuid(vm)})
    assert status == 200, body[:300]
    return body


def import_xva(xapid, api, data, sr):
    task = api.task.create("import", "")
    status, body = put(xapid, api, "/import", {"sr_id": sr}, data, task)
    st = task_wait(api, task, 120)
    return st, api.task.get_result(task), api.task.get_error_info(task)


def test_xva_roundtrip(xapid, api):
    sr = local_sr(api)
    vm = small_vm(api, "xva-src")
    api.VM.set_memory_limits(vm, str(256 * MiB), str(256 * MiB),
                             str(256 * MiB), str(256 * MiB))
    (dev, vdi), = vm_disks(api, vm)
    # a smaller disk keeps the test quick; content with holes
    size = 5 * MiB + 4096
    api.VDI.destroy(vdi)
    vdi = new_vdi(api, sr, size, "root")
    api.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True,
                    "mode": "RW", "type": "Disk", "empty": False,
                    "other_config": {}, "qos_algorithm_type": "",
                    "qos_algorithm_params": {}})
    data = bytearray(size)
    data[:MiB] = pattern(MiB, 20)
    data[3 * MiB:3 * MiB + 100] = b"x" * 100
    data[-10:] = b"0123456789"
    assert import_raw(xapid, api, vdi, bytes(data))[1] == "success"

    xva = export_xva(xapid, api, vm)
    tar = tarfile.open(fileobj=io.BytesIO(xva))
    names = tar.getnames()
    assert names[0] == "ova.xml"
    chunks = [n for n in names[1:] if not n.endswith(".xxhash")]
    prefix = chunks[0].split("/")[0]
    # chunk 1 and 2 (zeros) and 4 are left out; first and last are there
    assert chunks == ["%s/%08d" % (prefix, i) for i in (0, 3, 5)]
    for c in chunks:
        body = tar.extractfile(c).read()
        assert tar.extractfile(c + ".xxhash").read() == (
            b"%016X" % xxh64(body))
    ova = tar.extractfile("ova.xml").read().decode()
    assert "<name>objects</name>" in ova and "Ref:0" in ova

    st, result, info = import_xva(xapid, api, xva, sr)
    assert st == "success", info
    new_vm = xmlrpc_result(result)[0]
    assert api.VM.get_name_label(new_vm) == "xva-src"
    assert api.VM.get_uuid(new_vm) != api.VM.get_uuid(vm)
    assert api.VM.get_memory_static_max(new_vm) == str(256 * MiB)
    assert api.VM.get_power_state(new_vm) == "Halted"
    (ndev, nvdi), = vm_disks(api, new_vm)
    assert ndev == "0"
    assert int(api.VDI.get_virtual_size(nvdi)) == size
    assert sha(export_raw(xapid, api, nvdi)) == sha(bytes(data))
    # and the copy exports to the same chunks again
    again = tarfile.open(fileobj=io.BytesIO(export_xva(xapid, api, new_vm)))
    assert len(again.getnames()) == len(names)
    for v in (new_vm, vm):
        for d, x in vm_disks(api, v):
            api.VDI.destroy(x)
        api.VM.destroy(v)


def xmlrpc_result(text):
    import xmlrpc.client
    wrapped = ("<methodResponse><params><param>%s</param></params>"
               "</methodResponse>" % text)
    return xmlrpc.client.loads(wrapped)[0][0]


def make_xva(ova, disks, algo="xxhash", corrupt=None):
    """A hand-made XVA: disks is {prefix: bytes}."""
    buf = io.BytesIO()
    tar = tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT)

    def add(name, data):
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data))

    add("ova.xml", ova.encode())
    for prefix in sorted(disks):
        data = disks[prefix]
        n = (len(data) + MiB - 1) // MiB
        for i in range(n):
            chunk = data[i * MiB:(i + 1) * MiB]
            if 0 < i < n - 1 and not any(chunk):
                continue
            name = "%s/%08d" % (prefix, i)
            if algo == "xxhash":
                csum = b"%016X" % xxh64(chunk)
            else:
                csum = hashlib.sha1(chunk).hexdigest().encode()
            if corrupt == i:
                chunk = b"!" + chunk[1:]
            add(name, chunk)
            add(name + "." + algo, csum)
    tar.close()
    return buf.getvalue()


XS_OVA = """<value><struct>
<member><name>version</name><value><struct>
<member><name>hostname</name><value>xs</value></member>
<member><name>date</name><value>2024-01-01</value></member>
<member><name>product_version</name><value>8.2.1</value></member>
<member><name>product_brand</name><value>XCP-ng</value></member>
<member><name>build_number</name><value>release/yangtze</value></member>
<member><name>xapi_major</name><value><i4>1</i4></value></member>
<member><name>xapi_minor</name><value><i4>20</i4></value></member>
<member><name>export_vsn</name><value><i4>2</i4></value></member>
</struct></value></member>
<member><name>objects</name><value><array><data>
<value><struct><member><name>class</name><value>VM</value></member>
<member><name>id</name><value>Ref:0</value></member>
<member><name>snapshot</name><value><struct>
<member><name>uuid</name><value>8d1f3e52-5cd2-4a3b-9c1a-2a1f0e0e0e01</value></member>
<member><name>name_label</name><value>from-xcp-ng</value></member>
<member><name>power_state</name><value>Halted</value></member>
<member><name>memory_static_max</name><value>268435456</value></member>
<member><name>memory_dynamic_max</name><value>268435456</value></member>
<member><name>memory_dynamic_min</name><value>268435456</value></member>
<member><name>memory_static_min</name><value>134217728</value></member>
<member><name>VCPUs_max</name><value>2</value></member>
<member><name>VCPUs_at_startup</name><value>2</value></member>
<member><name>is_a_template</name><value><boolean>0</boolean></value></member>
<member><name>HVM_boot_policy</name><value>BIOS order</value></member>
<member><name>VBDs</name><value><array><data><value>Ref:1</value></data></array></value></member>
<member><name>resident_on</name><value>Ref:9</value></member>
<member><name>xenstore_data</name><value><struct/></value></member>
<member><name>future_field</name><value>ignored</value></member>
</struct></value></member></struct></value>
<value><struct><member><name>class</name><value>VBD</value></member>
<member><name>id</name><value>Ref:1</value></member>
<member><name>snapshot</name><value><struct>
<member><name>VM</name><value>Ref:0</value></member>
<member><name>VDI</name><value>Ref:2</value></member>
<member><name>userdevice</name><value>0</value></member>
<member><name>bootable</name><value><boolean>1</boolean></value></member>
<member><name>mode</name><value>RW</value></member>
<member><name>type</name><value>Disk</value></member>
<member><name>empty</name><value><boolean>0</boolean></value></member>
</struct></value></member></struct></value>
<value><struct><member><name>class</name><value>VDI</value></member>
<member><name>id</name><value>Ref:2</value></member>
<member><name>snapshot</name><value><struct>
<member><name>name_label</name><value>xcp disk</value></member>
<member><name>virtual_size</name><value>%d</value></member>
<member><name>type</name><value>system</value></member>
<member><name>SR</name><value>Ref:3</value></member>
<member><name>other_config</name><value><struct/></value></member>
</struct></value></member></struct></value>
</data></array></value></member>
</struct></value>"""


@pytest.mark.parametrize("algo", ["xxhash", "checksum"])
def test_xva_from_xcp_ng_layout(xapid, api, algo):
    sr = local_sr(api)
    size = 3 * MiB
    data = pattern(size, 30)
    xva = make_xva(XS_OVA % size, {"Ref:2": data}, algo)
    st, result, info = import_xva(xapid, api, xva, sr)
    assert st == "success", info
    vm = xmlrpc_result(result)[0]
    assert api.VM.get_name_label(vm) == "from-xcp-ng"
    assert api.VM.get_VCPUs_max(vm) == "2"
    (dev, vdi), = vm_disks(api, vm)
    assert api.VDI.get_name_label(vdi) == "xcp disk"
    assert sha(export_raw(xapid, api, vdi)) == sha(data)
    api.VDI.destroy(vdi)
    api.VM.destroy(vm)


def test_xva_corrupt_or_truncated_creates_nothing(xapid, api):
    sr = local_sr(api)
    size = 3 * MiB
    data = pattern(size, 31, holes=False)
    vms = len(api.VM.get_all())
    vdis = len(api.VDI.get_all())
    bad = make_xva(XS_OVA % size, {"Ref:2": data}, corrupt=1)
    st, result, info = import_xva(xapid, api, bad, sr)
    assert st == "failure" and info[0] == "IMPORT_ERROR", info
    assert "checksum" in info[1]
    good = make_xva(XS_OVA % size, {"Ref:2": data})
    st, result, info = import_xva(xapid, api, good[:len(good) // 2], sr)
    assert st == "failure", info
    st, result, info = import_xva(xapid, api, b"not a tar" * 100, sr)
    assert st == "failure", info
    assert len(api.VM.get_all()) == vms
    assert len(api.VDI.get_all()) == vdis


# ---- the xe client -----------------------------------------------------------


def xe_run(xapid, *args):
    b = os.path.join(xapilib.BUILD_DIR, "bin", "xe")
    if not os.path.exists(b):
        pytest.skip("xe is not built")
    home = tempfile.mkdtemp(dir=xapid.workdir)
    env = dict(os.environ, HOME=home,
               XE_KNOWN_HOSTS=os.path.join(home, "known"))
    p = subprocess.run([b, "-s", "127.0.0.1", "-p", str(xapid.port), "-u",
                        "root", "-pw", xapid.password] + list(args),
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, "xe %s: %s%s" % (args, p.stdout, p.stderr)
    return p.stdout


def test_xe_vdi_and_vm_import_export(xapid, api, tmp_path):
    sr = local_sr(api)
    vdi = new_vdi(api, sr, 2 * MiB)
    data = pattern(2 * MiB, 40)
    src = tmp_path / "in.raw"
    src.write_bytes(data)
    u = api.VDI.get_uuid(vdi)
    xe_run(xapid, "vdi-import", "uuid=" + u, "filename=" + str(src))
    out = tmp_path / "out.qcow2"
    xe_run(xapid, "vdi-export", "uuid=" + u, "filename=" + str(out),
           "format=qcow2")
    assert out.read_bytes()[:4] == b"QFI\xfb"
    assert sha(export_raw(xapid, api, vdi)) == sha(data)

    vm = small_vm(api, "xe-xva")
    (dev, root), = vm_disks(api, vm)
    api.VDI.destroy(root)
    api.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True,
                    "mode": "RW", "type": "Disk", "empty": False,
                    "other_config": {}, "qos_algorithm_type": "",
                    "qos_algorithm_params": {}})
    xva = tmp_path / "vm.xva"
    xe_run(xapid, "vm-export", "uuid=" + api.VM.get_uuid(vm),
           "filename=" + str(xva))
    new_uuid = xe_run(xapid, "vm-import", "filename=" + str(xva),
                      "sr-uuid=" + api.SR.get_uuid(sr)).strip()
    new_vm = api.VM.get_by_uuid(new_uuid)
    (d, nvdi), = vm_disks(api, new_vm)
    assert sha(export_raw(xapid, api, nvdi)) == sha(data)
    for v in (new_vm, vm):
        for d, x in vm_disks(api, v):
            api.VDI.destroy(x)
        api.VM.destroy(v)


def test_plain_setters_store_their_value(api):
    """SR/VDI/PBD setters the schema serves with the generic setter
    ("sets" in api-schema): the value lands, bad refs and types fail."""
    sr = local_sr(api)
    vdi = new_vdi(api, sr, MiB, name="setters")
    api.SR.set_name_label(sr, "renamed SR")
    api.SR.set_name_description(sr, "described")
    api.VDI.set_name_label(vdi, "renamed VDI")
    api.VDI.set_name_description(vdi, "vdi text")
    api.VDI.set_read_only(vdi, True)
    api.VDI.set_sharable(vdi, True)
    rec = api.VDI.get_record(vdi)
    assert (rec["name_label"], rec["name_description"]) == \
        ("renamed VDI", "vdi text")
    assert rec["read_only"] is True and rec["sharable"] is True
    srec = api.SR.get_record(sr)
    assert (srec["name_label"], srec["name_description"]) == \
        ("renamed SR", "described")
    pbd = srec["PBDs"][0]
    dc = api.PBD.get_device_config(pbd)
    api.PBD.set_device_config(pbd, dict(dc, extra="1"))
    assert api.PBD.get_device_config(pbd)["extra"] == "1"
    api.PBD.set_device_config(pbd, dc)
    with pytest.raises(XapiError) as e:
        api.VDI.set_name_label("OpaqueRef:nope", "x")
    assert e.value.details == ["HANDLE_INVALID", "VDI", "OpaqueRef:nope"]
    with pytest.raises(XapiError) as e:
        api.SR.set_shared(sr, "maybe")
    # xapi answers a wrongly typed argument with its unmarshaller's text
    assert e.value.details == ["INTERNAL_ERROR",
                               "Type error: value should be of type bool"]
    api.SR.set_name_label(sr, "Local storage")
    api.VDI.destroy(vdi)

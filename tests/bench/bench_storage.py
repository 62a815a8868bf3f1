#!/usr/bin/env python3
"""Storage throughput: import and export of a 1 GiB raw disk through
xapid's HTTP data paths (/import_raw_vdi, /export_raw_vdi, and a VM with
that disk through /export and /import as an XVA), next to `dd` copying
the same file on the same disk.  Prints MB/s (10^6 bytes per second);
reports, never asserts.

    XA_BUILD_DIR=build python3 tests/bench/bench_storage.py [--size-mib N]
"""

import argparse
import hashlib
import http.client
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

import xapilib  # noqa: E402

MiB = 1024 * 1024


def wait(api, task):
    while api.task.get_status(task) in ("pending", "cancelling"):
        time.sleep(0.05)
    st = api.task.get_status(task)
    if st != "success":
        raise SystemExit("task %s: %s" % (st, api.task.get_error_info(task)))
    return api.task.get_result(task)


def put_file(x, api, path, query, filename):
    task = api.task.create("bench", "")
    q = dict(query, session_id=api.ref, task_id=task)
    size = os.path.getsize(filename)
    c = http.client.HTTPConnection("127.0.0.1", x.port, timeout=600)
    t0 = time.monotonic()
    with open(filename, "rb") as f:
        c.request("PUT", path + "?" + urllib.parse.urlencode(q), body=f,
                  headers={"Content-Length": str(size)})
        r = c.getresponse()
        r.read()
    result = wait(api, task)
    dt = time.monotonic() - t0
    c.close()
    if r.status != 200:
        raise SystemExit("PUT %s: HTTP %d" % (path, r.status))
    return dt, result


def get_file(x, api, path, query, filename):
    q = dict(query, session_id=api.ref)
    c = http.client.HTTPConnection("127.0.0.1", x.port, timeout=600)
    t0 = time.monotonic()
    c.request("GET", path + "?" + urllib.parse.urlencode(q))
    r = c.getresponse()
    if r.status != 200:
        raise SystemExit("GET %s: HTTP %d" % (path, r.status))
    h = hashlib.sha256()
    with open(filename, "wb") as f:
        while True:
            b = r.read(4 * MiB)
            if not b:
                break
            h.update(b)
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    dt = time.monotonic() - t0
    c.close()
    return dt, h.hexdigest()


def dd(src, dst, extra=()):
    t0 = time.monotonic()
    subprocess.run(["dd", "if=" + src, "of=" + dst, "bs=1M"] + list(extra),
                   check=True, capture_output=True)
    return time.monotonic() - t0


def sha_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    args = ap.parse_args()
    size = args.size_mib * MiB
    work = tempfile.mkdtemp(prefix="xapid-bench-")
    x = xapilib.Xapid(workdir=work)
    x.start()
    try:
        api = x.login()
        src = os.path.join(work, "disk.raw")
        with open(src, "wb") as f:
            for i in range(args.size_mib):
                f.write(os.urandom(MiB))
        want = sha_file(src)
        mb = size / 1e6
        rows = []
        t = dd(src, os.path.join(work, "dd-copy.raw"), ["conv=fsync"])
        rows.append(("dd copy (write + fsync)", mb / t))
        t = dd(src, "/dev/null")
        rows.append(("dd read (page cache)", mb / t))

        sr = [r for r, v in api.SR.get_all_records().items()
              if v["name_label"] == "Local storage"][0]
        vdi = api.VDI.create({"SR": sr, "virtual_size": str(size),
                              "type": "user", "sharable": False,
                              "read_only": False, "other_config": {},
                              "name_label": "bench"})
        t, _ = put_file(x, api, "/import_raw_vdi",
                        {"vdi": vdi, "format": "raw"}, src)
        rows.append(("import_raw_vdi raw", mb / t))
        t, got = get_file(x, api, "/export_raw_vdi",
                          {"vdi": vdi, "format": "raw"},
                          os.path.join(work, "export.raw"))
        assert got == want, "export differs from import"
        rows.append(("export_raw_vdi raw", mb / t))

        tmpl = api.VM.get_by_name_label("Debian Bookworm 12")[0]
        vm = api.VM.clone(tmpl, "bench")
        api.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0",
                        "bootable": True, "mode": "RW", "type": "Disk",
                        "empty": False, "other_config": {},
                        "qos_algorithm_type": "",
                        "qos_algorithm_params": {}})
        xva = os.path.join(work, "vm.xva")
        t, _ = get_file(x, api, "/export", {"uuid": api.VM.get_uuid(vm)},
                        xva)
        rows.append(("VM export (XVA, xxhash)", mb / t))
        t, _ = put_file(x, api, "/import", {"sr_id": sr}, xva)
        rows.append(("VM import (XVA, xxhash)", mb / t))

        print("storage throughput, %d MiB of random data, MB/s:" %
              args.size_mib)
        for name, v in rows:
            print("  %-28s %8.1f" % (name, v))
    finally:
        x.stop()
        x.cleanup()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()

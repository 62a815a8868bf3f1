#!/usr/bin/env python3
"""event.from at scale: N clients wait on event.from, one write happens,
and we time how long until the last waiter has its answer.

Usage: bench_events.py --port P --password PW [--waiters N ...]
Starts nothing itself: point it at a running xapid (run.py does).  Prints,
for each N: time from the write's acknowledgement to the last answer, and
xapid's thread count and RSS while the waiters are parked."""
import argparse
import resource
import selectors
import socket
import time
import xmlrpc.client


def rss_threads(pid):
    rss = threads = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) // 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


def run(port, password, n, pid):
    api = xmlrpc.client.ServerProxy("http://127.0.0.1:%d/" % port)
    sess = api.session.login_with_password("root", password)["Value"]
    token = api.event.__getattr__("from")(sess, ["vm"], "", 0.0)
    token = token["Value"]["token"]
    body = xmlrpc.client.dumps((sess, ["vm"], token, 60.0),
                               "event.from").encode()
    req = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body)) + body
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    time.sleep(1.0 + n / 5000)  # let every request be parked
    rss, threads = rss_threads(pid) if pid else (0, 0)
    vm = api.VM.get_all(sess)["Value"][0]
    api.VM.set_name_description(sess, vm, "poke %f" % time.time())
    t0 = time.monotonic()
    pending = n
    last = t0
    while pending:
        for key, _ in sel.select(timeout=10):
            data = key.fileobj.recv(65536)
            if data:
                sel.unregister(key.fileobj)
                pending -= 1
                last = time.monotonic()
        if time.monotonic() - t0 > 30:
            break
    for s in socks:
        s.close()
    return (last - t0) * 1000, pending, rss, threads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--pid", type=int, default=0)
    ap.add_argument("--waiters", type=int, nargs="+", default=[1000, 10000])
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for n in a.waiters:
        ms, lost, rss, threads = run(a.port, a.password, n, a.pid)
        print("%6d waiters: last answer %.0f ms after the write, "
              "%d unanswered; xapid %d threads, %d MiB RSS while parked"
              % (n, ms, lost, threads, rss))


if __name__ == "__main__":
    main()

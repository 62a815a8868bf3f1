"""TLS on the management address: HTTPS only unless plain HTTP is asked
for, TLS 1.2 and 1.3 only, a host certificate that names 127.0.0.1, and
`xapid --regenerate-cert` (docs/testing.md, README)."""

import hashlib
import os
import signal
import socket
import ssl
import subprocess
import time

import pytest

import xapilib

# offering TLS 1.0 and 1.1 on purpose is what the ssl module deprecates
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PEM = "xapi-ssl.pem"
KEY = "xapi-ssl.key"


def file_fingerprint(path):
    with open(path) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return hashlib.sha256(der).hexdigest()


def served(port, version=None, ciphers=None, cafile=None):
    """Handshakes with 127.0.0.1:port; (protocol, cipher, fingerprint of
    the certificate served).  Raises ssl.SSLError when refused."""
    if cafile:
        ctx = ssl.create_default_context(cafile=cafile)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            der = s.getpeercert(binary_form=True)
            return s.version(), s.cipher()[0], hashlib.sha256(der).hexdigest()


def listening_ports(pid):
    """The TCP ports process 'pid' listens on."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            link = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def regenerate(state_dir):
    r = subprocess.run([xapilib.xapid_bin(), "--state-dir", state_dir,
                        "--regenerate-cert"], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60)
    out = r.stdout.decode()
    assert r.returncode == 0, (r.returncode, out, r.stderr.decode())
    line = [ln for ln in out.splitlines()
            if ln.startswith("SHA256 fingerprint: ")]
    assert line, out
    return line[0].split(": ", 1)[1].replace(":", "").lower()


@pytest.fixture
def https_server(xapid_factory):
    return xapid_factory.start(https=True)


# ---- HTTPS only by default -----------------------------------------------


def test_https_only_unless_http_port_given(tmp_path):
    """Without --http-port xapid listens on its HTTPS port and nothing
    else (the defaults are --http-port 0 --https-port 443)."""
    if not xapilib.xapid_bin():
        pytest.skip("xapid is not built")
    pw = tmp_path / "pw"
    pw.write_text("secret-pw\n")
    state = str(tmp_path / "state")
    port = xapilib.free_port()
    err = open(tmp_path / "stderr", "wb")
    p = subprocess.Popen([xapilib.xapid_bin(), "--state-dir", state,
                          "--bind", "127.0.0.1", "--https-port", str(port),
                          "--root-password-file", str(pw)],
                         stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    err.close()
    try:
        cafile = os.path.join(state, PEM)
        deadline = time.monotonic() + xapilib.START_TIMEOUT
        while True:
            assert p.poll() is None, (tmp_path / "stderr").read_text()
            try:
                api = xapilib.Api("https://127.0.0.1:%d/" % port,
                                  context=ssl.create_default_context(
                                      cafile=cafile), timeout=5)
                s = api.login("root", "secret-pw")
                break
            except (OSError, ssl.SSLError):
                assert time.monotonic() < deadline, \
                    (tmp_path / "stderr").read_text()
                time.sleep(0.1)
        assert s.pool.get_all()
        assert listening_ports(p.pid) == {port}
        # the HTTPS port does not answer plain HTTP
        with pytest.raises(Exception):
            r = xapilib.http_request(port, "POST", "/",
                                     xapilib.xml_call_body("pool.get_all",
                                                           s.ref), timeout=5)
            assert r.status != 200
        log = (tmp_path / "stderr").read_text()
        assert "serving https://" in log and "serving http://" not in log
    finally:
        p.send_signal(signal.SIGTERM)
        rc = p.wait(xapilib.STOP_TIMEOUT)
    assert rc == 0, (tmp_path / "stderr").read_text()


def test_plain_http_when_asked(https_server):
    x = https_server
    assert listening_ports(x.pid) == {x.port, x.https_port}
    assert x.login().pool.get_all()
    assert x.login(https=True).pool.get_all()


# ---- protocol versions and ciphers -----------------------------------------


def test_tls12_and_tls13_accepted(https_server):
    x = https_server
    cafile = os.path.join(x.state_dir, PEM)
    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
                          (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        proto, cipher, _ = served(x.https_port, version, cafile=cafile)
        assert proto == name
        # a default client gets an AEAD cipher
        assert "GCM" in cipher or "CHACHA20" in cipher, cipher


def client_offers(version):
    """Whether this Python/OpenSSL can offer 'version' at all (OpenSSL 3
    refuses TLS < 1.2 below security level 0)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.minimum_version = ctx.maximum_version = version
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        return False
    return True


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_tls_refused(https_server, version):
    v = getattr(ssl.TLSVersion, version)
    if not client_offers(v):
        pytest.skip("this OpenSSL cannot offer %s" % version)
    with pytest.raises((ssl.SSLError, ConnectionError)) as ei:
        served(https_server.https_port, v, ciphers="DEFAULT:@SECLEVEL=0")
    # refused by the server (an alert or a closed connection), not by
    # this client's own configuration
    assert "NO_PROTOCOLS_AVAILABLE" not in str(ei.value), ei.value
    assert "NO_CIPHERS_AVAILABLE" not in str(ei.value), ei.value


def test_tls12_cbc_sha1_refused(https_server):
    with pytest.raises(ssl.SSLError):
        served(https_server.https_port, ssl.TLSVersion.TLSv1_2,
               ciphers="ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA")


# ---- the certificate ------------------------------------------------------


def test_certificate_names_loopback(https_server):
    x = https_server
    pem = os.path.join(x.state_dir, PEM)
    dec = ssl._ssl._test_decode_cert(pem)
    san = dec.get("subjectAltName", ())
    assert ("IP Address", "127.0.0.1") in san, san
    assert ("DNS", "localhost") in san, san
    # a verifying client accepts it for 127.0.0.1 (check_hostname is on)
    _, _, fp = served(x.https_port, cafile=pem)
    assert fp == file_fingerprint(pem)
    assert os.stat(os.path.join(x.state_dir, KEY)).st_mode & 0o077 == 0


def test_regenerate_cert(https_server):
    x = https_server
    pem = os.path.join(x.state_dir, PEM)
    old = file_fingerprint(pem)
    assert served(x.https_port)[2] == old
    new = regenerate(x.state_dir)
    assert new != old
    assert file_fingerprint(pem) == new
    assert os.stat(os.path.join(x.state_dir, KEY)).st_mode & 0o077 == 0
    # the running server keeps the pair it loaded ...
    assert served(x.https_port)[2] == old
    # ... and serves the new one once restarted
    x.restart()
    assert served(x.https_port, cafile=pem)[2] == new
    assert x.login(https=True).pool.get_all()


def test_key_not_matching_certificate_is_replaced(https_server, tmp_path):
    """A regeneration cut short between its two renames leaves a new key
    beside the old certificate: the next start makes a fresh pair."""
    x = https_server
    x.stop_clean()
    other = str(tmp_path / "other")
    regenerate(other)
    os.replace(os.path.join(other, KEY), os.path.join(x.state_dir, KEY))
    before = file_fingerprint(os.path.join(x.state_dir, PEM))
    x.start()
    pem = os.path.join(x.state_dir, PEM)
    after = file_fingerprint(pem)
    assert after != before
    assert served(x.https_port, cafile=pem)[2] == after
    assert "does not match" in x.stderr_text()

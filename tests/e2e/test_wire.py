"""The wire protocol (XENAPI.md section 1): exact XML-RPC and JSON-RPC
bytes, headers, endpoints, aliases, system.listMethods and HTTPS."""

import json
import os
import re
import subprocess
import xmlrpc.client

import pytest

import xapilib
from xapilib import XapiError, expect_error

HEAD = ('<?xml version="1.0"?><methodResponse><params><param><value><struct>'
        '<member><name>Status</name>')
OK_HEAD = HEAD + ('<value>Success</value></member>'
                  '<member><name>Value</name>')
FAIL_HEAD = HEAD + ('<value>Failure</value></member>'
                    '<member><name>ErrorDescription</name>')
TAIL = '</member></struct></value></param></params></methodResponse>'

REF = r"OpaqueRef:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def body_text(r):
    assert r.status == 200, r
    return r.body.decode("utf-8")


def value_xml(r):
    """The <value>...</value> of a success reply, checked to be one."""
    t = body_text(r)
    assert t.startswith(OK_HEAD), t[:400]
    assert t.endswith(TAIL), t[-400:]
    return t[len(OK_HEAD):-len(TAIL)]


@pytest.fixture(scope="module")
def vm(session):
    """A fresh VM to read and write (copied from a template)."""
    tmpl = session.VM.get_by_name_label("Other install media")[0]
    rec = session.VM.get_record(tmpl)
    rec["name_label"] = "wire-test"
    rec["is_a_template"] = False
    return session.VM.create(rec)


# ---- XML-RPC bytes -------------------------------------------------------


def test_xml_success_exact_bytes(xapid):
    r = xapid.xml("session.login_with_password", "root", xapid.password)
    t = body_text(r)
    assert re.fullmatch(re.escape(OK_HEAD) + "<value>" + REF + "</value>"
                        + re.escape(TAIL), t), t


def test_xml_failure_exact_bytes(xapid, session):
    r = xapid.xml("VM.get_record", session.ref, "OpaqueRef:bogus")
    assert body_text(r) == (
        FAIL_HEAD + "<value><array><data><value>HANDLE_INVALID</value>"
        "<value>VM</value><value>OpaqueRef:bogus</value></data></array>"
        "</value>" + TAIL)


def test_xml_failure_is_http_200_never_fault(xapid):
    r = xapid.xml("no.such_method", "x")
    t = body_text(r)
    assert "<fault>" not in t
    assert t == (FAIL_HEAD + "<value><array><data>"
                 "<value>MESSAGE_METHOD_UNKNOWN</value>"
                 "<value>no.such_method</value></data></array></value>"
                 + TAIL)


def test_xml_compact_no_whitespace_between_elements(xapid, session):
    r = xapid.xml("VM.get_all_records", session.ref)
    t = body_text(r)
    assert len(t) > 10000  # a real document: dom0 and the templates
    m = re.search(r">[ \t\r\n]+<", t)
    assert m is None, t[max(0, m.start() - 200):m.end() + 200]
    assert "\n" not in t


def test_void_is_empty_value(xapid, session, vm):
    r = xapid.xml("VM.set_name_label", session.ref, vm, "wire-test")
    assert value_xml(r) == "<value></value>"
    assert xapid.xml("VM.set_name_label", session.ref, vm,
                     "wire-test").xml() == {"Status": "Success", "Value": ""}
    _, doc = xapid.jsonrpc("VM.set_name_label", [session.ref, vm,
                                                 "wire-test"])
    assert doc == {"result": "", "error": None, "id": 1}


def test_int64_decimal_string_in_xml_number_in_json(xapid, session):
    host = session.host.get_all()[0]
    hm = session.host.get_metrics(host)
    v = value_xml(xapid.xml("host_metrics.get_memory_total", session.ref, hm))
    m = re.fullmatch(r"<value>(\d+)</value>", v)
    assert m, v
    total = int(m.group(1))
    assert total > 2 ** 31  # really 64-bit: more than 2 GiB of memory
    _, doc = xapid.jsonrpc("host_metrics.get_memory_total",
                           [session.ref, hm])
    assert type(doc["result"]) is int
    assert doc["result"] == total
    # Inside records too: no <i4>/<i8> for int64 fields.
    rec = value_xml(xapid.xml("host_metrics.get_record", session.ref, hm))
    assert ("<member><name>memory_total</name><value>%d</value></member>"
            % total) in rec
    assert "<i8>" not in rec


def test_bool_double_datetime_encodings(xapid, session, vm):
    tmpl = session.VM.get_by_name_label("Other install media")[0]
    assert value_xml(xapid.xml("VM.get_is_a_template", session.ref, tmpl)) \
        == "<value><boolean>1</boolean></value>"
    assert value_xml(xapid.xml("VM.get_is_a_template", session.ref, vm)) \
        == "<value><boolean>0</boolean></value>"
    task = session.task.create("wire", "")
    try:
        assert value_xml(xapid.xml("task.get_progress", session.ref, task)) \
            == "<value><double>0</double></value>"
        session.task.set_progress(task, 0.25)
        assert value_xml(xapid.xml("task.get_progress", session.ref, task)) \
            == "<value><double>0.25</double></value>"
        created = value_xml(xapid.xml("task.get_created", session.ref, task))
        assert re.fullmatch(r"<value><dateTime\.iso8601>\d{8}T\d\d:\d\d:\d\dZ"
                            r"</dateTime\.iso8601></value>", created), created
        _, doc = xapid.jsonrpc("task.get_progress", [session.ref, task])
        assert doc["result"] == 0.25
        _, doc = xapid.jsonrpc("task.get_created", [session.ref, task])
        assert re.fullmatch(r"\d{8}T\d\d:\d\d:\d\dZ", doc["result"])
    finally:
        session.task.destroy(task)


def test_string_escaping(xapid, session, vm):
    session.VM.set_name_label(vm, 'a<b>&"c\'d')
    v = value_xml(xapid.xml("VM.get_name_label", session.ref, vm))
    assert v == "<value>a&lt;b&gt;&amp;&quot;c'd</value>"
    # Control characters other than TAB/LF/CR cannot be sent in XML 1.0;
    # set one over JSON and read it back over XML: dropped.
    _, doc = xapid.jsonrpc("VM.set_name_label", [session.ref, vm, "x\x01y"])
    assert doc["error"] is None, doc
    assert value_xml(xapid.xml("VM.get_name_label", session.ref, vm)) \
        == "<value>xy</value>"
    _, doc = xapid.jsonrpc("VM.get_name_label", [session.ref, vm])
    assert doc["result"] == "x\x01y"
    session.VM.set_name_label(vm, "wire-test")


def test_bare_value_and_typed_string_params_accepted(xapid, session, vm):
    """<value>text</value> and <value><string>text</string></value> are
    both strings on input."""
    body = ('<?xml version="1.0"?><methodCall><methodName>VM.get_name_label'
            '</methodName><params><param><value>%s</value></param>'
            '<param><value><string>%s</string></value></param></params>'
            '</methodCall>' % (session.ref, vm))
    assert value_xml(xapid.post("/", body)) == "<value>wire-test</value>"


# ---- headers and endpoints -----------------------------------------------


def test_content_type_and_cors(xapid, session):
    r = xapid.xml("VM.get_all", session.ref)
    assert r.header("Content-Type") == "text/xml"
    assert r.header("Access-Control-Allow-Origin") == "*"
    r, _ = xapid.jsonrpc("VM.get_all", [session.ref])
    assert r.header("Content-Type") == "application/json"
    assert r.header("Access-Control-Allow-Origin") == "*"
    # failures too
    r = xapid.xml("VM.get_record", session.ref, "OpaqueRef:x")
    assert r.header("Content-Type") == "text/xml"
    assert r.header("Access-Control-Allow-Origin") == "*"


def test_options_preflight(xapid):
    r = xapid.request("OPTIONS", "/jsonrpc",
                      headers={"Origin": "http://example.org",
                               "Access-Control-Request-Method": "POST"})
    assert r.status == 200
    assert r.header("Access-Control-Allow-Origin") == "*"
    assert "POST" in (r.header("Access-Control-Allow-Methods") or "")


@pytest.mark.parametrize("path", ["/", "/RPC2", "/xmlrpc"])
def test_xml_endpoints(xapid, session, path):
    r = xapid.xml("VM.get_all", session.ref, path=path)
    assert r.header("Content-Type") == "text/xml"
    d = r.xml()
    assert d["Status"] == "Success"
    assert sorted(d["Value"]) == sorted(session.VM.get_all())


def test_jsonrpc_endpoint(xapid, session):
    r, doc = xapid.jsonrpc("VM.get_all", [session.ref])
    assert r.status == 200
    assert sorted(doc["result"]) == sorted(session.VM.get_all())


# ---- JSON-RPC shapes -----------------------------------------------------


def test_jsonrpc_v1_success_and_error(xapid, session):
    r, doc = xapid.jsonrpc("pool.get_all", [session.ref], id=7)
    assert list(doc.keys()) == ["result", "error", "id"]
    assert doc["error"] is None and doc["id"] == 7
    assert doc["result"] == session.pool.get_all()
    r, doc = xapid.jsonrpc("VM.get_record", [session.ref, "OpaqueRef:bogus"],
                           id="abc")
    assert r.status == 200
    assert doc == {"result": None,
                   "error": ["HANDLE_INVALID", "VM", "OpaqueRef:bogus"],
                   "id": "abc"}


def test_jsonrpc_v2_success_and_error(xapid, session):
    r, doc = xapid.jsonrpc("pool.get_all", [session.ref], version=2, id=9)
    assert doc == {"jsonrpc": "2.0", "result": session.pool.get_all(),
                   "id": 9}
    r, doc = xapid.jsonrpc("VM.get_record", [session.ref, "OpaqueRef:bogus"],
                           version=2, id="z")
    assert r.status == 200
    assert doc == {"jsonrpc": "2.0",
                   "error": {"code": 1, "message": "HANDLE_INVALID",
                             "data": ["VM", "OpaqueRef:bogus"]},
                   "id": "z"}
    # An error without parameters still has an (empty) data array.
    r, doc = xapid.jsonrpc("nope", [], version=2, id=1)
    assert doc["error"] == {"code": 1, "message": "MESSAGE_METHOD_UNKNOWN",
                            "data": ["nope"]}


def test_jsonrpc_exact_bytes(xapid, session):
    r, _ = xapid.jsonrpc("VM.get_record", [session.ref, "OpaqueRef:b"],
                         version=2, id=3)
    assert r.body == (b'{"jsonrpc":"2.0","error":{"code":1,"message":'
                      b'"HANDLE_INVALID","data":["VM","OpaqueRef:b"]},'
                      b'"id":3}')
    r, _ = xapid.jsonrpc("VM.get_record", [session.ref, "OpaqueRef:b"],
                         id=3)
    assert r.body == (b'{"result":null,"error":["HANDLE_INVALID","VM",'
                      b'"OpaqueRef:b"],"id":3}')


def test_jsonrpc_missing_id_rejected(xapid):
    r, doc = xapid.jsonrpc(None, None, raw=json.dumps(
        {"method": "system.listMethods", "params": []}))
    assert r.status in (400, 500), r
    r, doc = xapid.jsonrpc(None, None, raw=json.dumps(
        {"method": "system.listMethods", "params": [], "id": None}))
    assert r.status in (400, 500), r


def test_jsonrpc_v2_by_name_params_are_one_struct(xapid, session):
    """A v2 params object is passed as one struct parameter: VM.create
    takes exactly one (after the session), but the session must then be
    inside it - so this fails with a count or session error, never a
    crash, and the server stays up."""
    r, doc = xapid.jsonrpc("VM.get_all", {"session_id": session.ref},
                           version=2)
    assert r.status == 200
    assert doc["error"]["message"] in ("SESSION_INVALID",
                                       "MESSAGE_PARAMETER_COUNT_MISMATCH")


def test_sessions_work_across_protocols(xapid):
    ref = xapid.json_call("session.login_with_password", "root",
                          xapid.password)
    api = xapid.api()
    assert api.call("pool.get_all", ref)
    sx = xapid.login()
    assert xapid.json_call("pool.get_all", sx.ref) == api.call("pool.get_all",
                                                               ref)


# ---- aliases --------------------------------------------------------------


@pytest.mark.parametrize("alias,dotted", [
    ("VM_get_all", "VM.get_all"),
    ("VM_metrics_get_all", "VM_metrics.get_all"),
    ("host_cpu_get_all", "host_cpu.get_all"),
    ("pool_get_all", "pool.get_all"),
])
def test_class_message_alias(session, alias, dotted):
    got = session.call(alias)
    assert sorted(got) == sorted(session.call(dotted))
    assert got  # every one of these classes has rows


def test_event_from_alias(session):
    r = session.call("event_from", ["pool"], "", 0.0)
    assert [e["class"] for e in r["events"]] == ["pool"]


def test_alias_in_json(xapid, session):
    r, doc = xapid.jsonrpc("VM_get_all", [session.ref])
    assert sorted(doc["result"]) == sorted(session.VM.get_all())


def test_alias_has_no_async_form(session):
    e = expect_error(session.call, "Async.VM_create", {})
    assert e.details == ["MESSAGE_METHOD_UNKNOWN", "Async.VM_create"]


# ---- system.* --------------------------------------------------------------


def expected_methods():
    s = xapilib.load_xagen_schema()
    public = [m for m in s.messages if not m["hidden"]]
    names = {m["wire"] for m in public}
    names |= {"Async." + m["wire"] for m in public if m["async"]}
    return public, names


def test_list_methods_is_bare_array_of_every_public_message(xapid):
    r = xapid.xml("system.listMethods")
    t = body_text(r)
    assert t.startswith('<?xml version="1.0"?><methodResponse><params>'
                        '<param><value><array><data>'), t[:300]
    assert "Status" not in t[:200]
    got = r.xml()
    assert isinstance(got, list)
    assert len(got) == len(set(got)), "duplicates in listMethods"
    public, names = expected_methods()
    assert len(public) == 1828
    sync = {n for n in got if not n.startswith("Async.")
            and not n.startswith("system.")}
    assert len(sync) == 1828
    extra = set(got) - names - {"system.listMethods", "system.isAlive"}
    missing = names - set(got)
    assert not missing, sorted(missing)[:20]
    assert not extra, sorted(extra)[:20]
    # The hidden ones are callable but not listed.
    assert "VM.get_all_records_where" not in got


def test_list_methods_matches_generator_listing(xapid, tmp_path):
    out = subprocess.run(
        ["/usr/bin/python3", "-B",
         os.path.join(xapilib.SCHEMA_DIR, "codegen", "xagen.py"),
         "--schema", xapilib.SCHEMA_DIR, "--out", str(tmp_path),
         "--list-messages"], check=True, capture_output=True,
        text=True).stdout.split()
    assert len(out) == 1828
    got = set(xapid.xml("system.listMethods").xml())
    assert set(out) <= got


def test_list_methods_covers_reference_datamodel(xapid):
    p = xapilib.reference_json_path()
    if not p:
        pytest.skip("no ../shared/reference/xenapi.json next to the source")
    with open(p) as f:
        ref = json.load(f)
    wanted = {"%s.%s" % (c["name"], m["name"]) for c in ref
              for m in c["messages"]}
    assert len(wanted) == 1828
    got = set(xapid.xml("system.listMethods").xml())
    missing = wanted - got
    assert not missing, sorted(missing)[:20]


def test_list_methods_over_json(xapid):
    _, doc = xapid.jsonrpc("system.listMethods", [])
    assert isinstance(doc["result"], list)
    assert "VM.get_all" in doc["result"]
    assert "Async.VM.clone" in doc["result"]


def test_is_alive_echoes(xapid):
    r = xapid.xml("system.isAlive:abc", "hello")
    assert r.xml() == "hello"


# ---- HTTPS -------------------------------------------------------------------


def test_https_with_self_signed_cert(xapid_https):
    x = xapid_https
    pem = os.path.join(x.state_dir, "xapi-ssl.pem")
    assert os.path.exists(pem)
    s = x.login(https=True)
    pools = s.pool.get_all()
    assert len(pools) == 1
    # Plain HTTP on the other port speaks to the same database.
    assert x.login().pool.get_all() == pools
    # The certificate really is checked: without the CA the handshake fails.
    import ssl
    bad = xapilib.Api(x.https_url, context=ssl.create_default_context())
    with pytest.raises(ssl.SSLError):
        bad.call("session.login_with_password", "root", x.password)


def test_https_exact_bytes(xapid_https):
    x = xapid_https
    r = xapilib.http_request(x.https_port, "POST", "/",
                             xapilib.xml_call_body("system.isAlive", "tls"),
                             context=x.ssl_context())
    assert r.status == 200
    assert r.header("Content-Type") == "text/xml"
    assert r.body == (b'<?xml version="1.0"?><methodResponse><params><param>'
                      b'<value>tls</value></param></params></methodResponse>')

"""The message class: notifications about objects, kept in the database,
followed as events, filtered by time and object."""
import time

import pytest

from xapilib import XapiError


@pytest.fixture(scope="module")
def api(xapid_module_factory):
    return xapid_module_factory.start().login()


def test_create_read_filter_destroy(api):
    host = api.host.get_all()[0]
    huuid = api.host.get_uuid(host)
    pool_uuid = api.pool.get_uuid(api.pool.get_all()[0])
    m1 = api.message.create("HA_HOST_FAILED", 1, "Host", huuid, "gone")
    rec = api.message.get_record(m1)
    assert (rec["name"], rec["priority"], rec["cls"], rec["obj_uuid"],
            rec["body"]) == ("HA_HOST_FAILED", "1", "Host", huuid, "gone")
    assert rec["timestamp"].value.endswith("Z")
    assert api.message.get_by_uuid(rec["uuid"]) == m1
    assert m1 in api.message.get_all()
    assert set(api.message.get_all_records()) == set(api.message.get_all())
    where = api.message.get_all_records_where('field "name" = "HA_HOST_FAILED"')
    assert list(where) == [m1]
    time.sleep(1.1)
    since = rec["timestamp"]
    m2 = api.message.create("POOL_NOTE", 5, "Pool", pool_uuid, "hello")
    assert list(api.message.get_since(since)) == [m2]
    assert set(api.message.get_since("19700101T00:00:00Z")) == {m1, m2}
    assert list(api.message.get("Host", huuid, "19700101T00:00:00Z")) == [m1]
    assert api.message.get("Host", huuid, since) == {}
    api.message.destroy(m1)
    api.message.destroy_many([m2])
    assert api.message.get_all() == []


def test_errors(api):
    with pytest.raises(XapiError) as e:
        api.message.create("X", 1, "VM", "no-such-uuid", "")
    assert e.value.details == ["UUID_INVALID", "VM", "no-such-uuid"]
    with pytest.raises(XapiError) as e:
        api.message.create("X", 1, "Nonsense", "u", "")
    assert e.value.details == ["INVALID_VALUE", "cls", "Nonsense"]
    with pytest.raises(XapiError) as e:
        api.message.destroy("OpaqueRef:nope")
    assert e.value.details == ["HANDLE_INVALID", "message", "OpaqueRef:nope"]


def test_messages_are_events(xapid_module_factory):
    api = xapid_module_factory.start().login()
    event_from = getattr(api.event, "from")
    first = event_from(["message"], "", 0.0)
    host = api.host.get_all()[0]
    ref = api.message.create("NOTE", 3, "Host", api.host.get_uuid(host), "b")
    got = event_from(["message"], first["token"], 5.0)
    evs = [e for e in got["events"] if e["class"] == "message"]
    assert [(e["operation"], e["ref"]) for e in evs] == [("add", ref)]
    assert evs[0]["snapshot"]["name"] == "NOTE"

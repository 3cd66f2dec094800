"""The envelope codec: Event <-> the SDK's CloudEvent <-> structured JSON, and its refusals."""

from __future__ import annotations

import json

import pytest

from autonomic.core.envelope import decode, encode, from_cloudevent, new_event, to_cloudevent
from autonomic.core.events import Event
from autonomic.errors import EventRejected


def sample(**overrides: object) -> Event:
    event = new_event(
        "com.acme.audit.requested",
        {"path": "src/app.py", "lines": [1, 2], "note": "Ω"},
        source="autonomic://run/r1",
        correlation_id="corr-1",
        subject="src/app.py",
        tenant="acme",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    return Event(**{**{f: getattr(event, f) for f in event.__dataclass_fields__}, **overrides})


def test_an_event_survives_the_round_trip_through_json():
    event = sample(extensions={"partitionhint": "7"})
    assert decode(encode(event)) == event


def test_an_event_survives_the_round_trip_through_the_sdk():
    event = sample()
    cloud = to_cloudevent(event)
    assert cloud.get_extension("correlationid") == "corr-1"
    assert cloud.get_extension("tenant") == "acme"
    assert cloud.get_specversion() == "1.0"
    assert from_cloudevent(cloud) == event


def test_the_wire_form_is_a_structured_cloudevent():
    wire = json.loads(encode(sample()))
    assert wire["specversion"] == "1.0"
    assert wire["type"] == "com.acme.audit.requested"
    assert wire["correlationid"] == "corr-1"
    assert wire["traceparent"].startswith("00-")
    assert wire["time"].endswith("Z")
    assert wire["data"]["note"] == "Ω"


def test_an_envelope_without_our_extensions_reads_with_defaults():
    raw = json.dumps(
        {"specversion": "1.0", "id": "e1", "source": "x", "type": "a.b", "data": {"k": 1}}
    )
    event = decode(raw)
    assert event.correlation_id == "e1", "a foreign event starts its own conversation"
    assert event.tenant == "default"
    assert event.data == {"k": 1}


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON list, not an object"),
        (b'{"specversion": "1.0", "source": "x", "type": "a.b"}', "missing attribute id"),
        (b'{"specversion": "0.3", "id": "1", "source": "x", "type": "a.b"}', "specversion"),
        (
            b'{"specversion": "1.0", "id": "1", "source": "x", "type": "a.b", "time": "soon"}',
            "malformed CloudEvent",
        ),
        (
            b'{"specversion": "1.0", "id": "1", "source": "x", "type": "a.b", "data_base64": "AA=="}',
            "binary data",
        ),
        (
            b'{"specversion": "1.0", "id": "1", "source": "x", "type": "a.b", '
            b'"datacontenttype": "text/plain", "data": "hi"}',
            "not JSON",
        ),
        (
            b'{"specversion": "1.0", "id": "1", "source": "x", "type": "a.b", "correlationid": 5}',
            "correlationid must be a string",
        ),
    ],
)
def test_a_malformed_envelope_is_refused_with_what_is_wrong(raw, says):
    with pytest.raises(EventRejected, match=says) as caught:
        decode(raw)
    assert "\n" not in str(caught.value)


def test_the_outbox_writer_gives_the_sdks_structured_json():
    from autonomic.core.envelope import structured

    for event in (sample(), sample(subject=None, traceparent=None, extensions={"x": "1"})):
        assert json.loads(structured(event)) == json.loads(encode(event))
        assert decode(structured(event)) == event

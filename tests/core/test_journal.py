import json

from autonomic.core.canonical import canonical_json, digest
from autonomic.core.journal import (
    BLOB_THRESHOLD,
    GENESIS_HASH,
    EntryKind,
    blob_reference,
    chain_hash,
    pack,
)


def test_small_payloads_stay_inline():
    packed = pack("r", 1, EntryKind.TOOL_RESULT, {"ok": True}, prev_hash=GENESIS_HASH, created_at=0)
    assert packed.blob is None
    assert json.loads(packed.text) == {"ok": True}
    assert blob_reference(packed.text) is None


def test_large_payloads_move_to_a_content_addressed_blob():
    payload = {"output": "x" * (BLOB_THRESHOLD + 1)}
    packed = pack("r", 1, EntryKind.TOOL_RESULT, payload, prev_hash=GENESIS_HASH, created_at=0)
    assert packed.blob is not None
    assert packed.blob.address == digest(canonical_json(payload).encode())
    assert blob_reference(packed.text) == packed.blob.address
    assert len(packed.text) < 200
    assert json.loads(packed.blob.data) == payload


def test_hash_chains_to_the_previous_entry_and_covers_the_payload():
    a = pack("r", 1, EntryKind.TOOL_RESULT, {"v": 1}, prev_hash=GENESIS_HASH, created_at=0)
    b = pack("r", 2, EntryKind.TOOL_RESULT, {"v": 1}, prev_hash=a.entry.hash, created_at=0)
    b_other_prev = pack(
        "r", 2, EntryKind.TOOL_RESULT, {"v": 1}, prev_hash=GENESIS_HASH, created_at=0
    )
    b_other_payload = pack(
        "r", 2, EntryKind.TOOL_RESULT, {"v": 2}, prev_hash=a.entry.hash, created_at=0
    )
    assert len({b.entry.hash, b_other_prev.entry.hash, b_other_payload.entry.hash}) == 3
    assert b.entry.hash == chain_hash(a.entry.hash, 2, "tool.result", digest(b'{"v":1}'))


def test_canonical_json_is_order_independent():
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == canonical_json(
        {"a": [1, {"c": 3, "d": 2}], "b": 1}
    )

"""An audit export an auditor edited or received cut is refused by its file and line, not with a
traceback (``audit/checkpoint.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from autonomic.audit.checkpoint import verify_export
from autonomic.errors import InvalidInput

PUBLIC = Ed25519PrivateKey.generate().public_key()


def _export(tmp_path: Path, log: list[str], checkpoints: list[str]) -> Path:
    (tmp_path / "log.jsonl").write_text("".join(line + "\n" for line in log))
    (tmp_path / "checkpoints.jsonl").write_text("".join(line + "\n" for line in checkpoints))
    return tmp_path


@pytest.mark.parametrize(
    "line",
    ["[1, 2]", '{"pos": "3"}', '{"pos": true}', '"pos"', "12", "not json", '{"head": "x"}'],
)
def test_a_line_that_is_not_a_checkpoint_is_named(tmp_path: Path, line: str) -> None:
    folder = _export(tmp_path, [], ['{"pos": 0, "head": "x"}', "", line])
    with pytest.raises(InvalidInput, match=r"^checkpoints.jsonl line 3 is not a checkpoint "):
        verify_export(folder, PUBLIC)


@pytest.mark.parametrize(
    "record",
    [
        '["a", "anchor", null, "b", "h", 1.0]',  # a position that is not a number
        '[1, "anchor", null, "b", "h"]',  # a field short
        '[1, "anchor", 5, "b", "h", 1.0]',  # a run id that is not text
        '[1, "anchor", null, "b", "h", "noon"]',  # a time that is not a number
        '[1, "anchor", null, "b", "h", true]',
        '{"pos": 1, "kind": "anchor"}',
        "7",
        "",
    ],
)
def test_a_line_that_is_not_a_record_is_named(tmp_path: Path, record: str) -> None:
    first = json.dumps([0, "genesis", None, "{}", "0" * 64, 1.0])
    folder = _export(tmp_path, [first, record], [])
    with pytest.raises(InvalidInput, match=r"^log.jsonl line 2 is not a record "):
        verify_export(folder, PUBLIC)


def test_a_missing_file_is_not_an_export(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"not an audit export: .*checkpoints\.jsonl"):
        verify_export(tmp_path, PUBLIC)

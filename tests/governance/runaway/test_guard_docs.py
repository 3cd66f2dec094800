"""The Python examples in docs/guards.md run as written."""

import re
from pathlib import Path

DOC = Path(__file__).parents[3] / "docs" / "guards.md"


def test_python_examples_in_the_guards_doc_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), {})  # our own documentation

"""Tables whose run and approval ids are never broken across lines.

A person copies ids out of ``autonomic runs``, ``approvals`` and ``show`` into the next command.
Left alone, rich folds a long id over several lines as soon as the terminal is narrow (or, when
the output is piped, narrower than the table wants): what is copied is then not the id. So every
column gets at least the width of the longest id in it, and when the table cannot be that wide
here it is printed as one record per row (the first column on a line of its own, then
``column: value`` lines), which fits any width.

Numbers, percentages, statuses and names are kept whole the same way: rich would otherwise cut
``100.0%`` to ``100…`` in a piped 80-column table (``autonomic kpis``), which reads as another
number. A cell without a space (up to ``_TOKEN`` characters) is such a value; a header is kept to
its longest word. Only text with spaces (a reason, a summary) may wrap.
"""

from __future__ import annotations

import re

from rich.console import Console
from rich.errors import MarkupError
from rich.table import Table
from rich.text import Text

ID = re.compile(r"\b(?:run|apr)_[0-9a-f]{8,}\b")
"""A run or approval id, as it appears inside any cell (a reason, a timeline summary)."""

_NARROWEST = 4
"""The width a column without ids may shrink to before the table counts as not fitting."""


_TOKEN = 32
"""The longest cell without a space kept whole as a value; a longer one may be folded."""


def keep_ids_whole(table: Table) -> Table:
    """Give each column of ``table`` at least the width of the longest id or value among its
    cells, and of its header's longest word."""
    for column in table.columns:
        longest = max(map(len, _plain(column.header).split()), default=0)
        for cell in column.cells:
            text = _plain(cell)
            if len(text) <= _TOKEN and not any(c.isspace() for c in text):
                longest = max(longest, len(text))
            else:
                longest = max([longest, *map(len, ID.findall(text))])
        if longest:
            column.min_width = max(column.min_width or 0, longest)
    return table


def _plain(cell: object) -> str:
    """The text a cell shows: a ``Text``'s plain text, a string without its markup."""
    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        try:
            return Text.from_markup(cell).plain
        except MarkupError:
            return cell
    return str(cell)


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` with its ids whole: as a table where it fits, else as records."""
    keep_ids_whole(table)
    # each column: its content (at least the narrowest width), two of padding, one of border
    needed = 1 + sum(max(c.min_width or 0, _NARROWEST) + 3 for c in table.columns)
    if needed <= console.width:
        console.print(table)
        return
    if table.title:
        console.print(table.title)
    columns = table.columns
    for row in zip(*(list(c.cells) for c in columns), strict=True):
        console.print(row[0])
        for column, cell in zip(columns[1:], row[1:], strict=True):
            if str(cell):
                console.print("  ", column.header, ": ", cell, sep="")

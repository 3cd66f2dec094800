"""Plain versioned SQL migrations, one folder per dialect, applied in file-name order."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load(dialect: str) -> list[Migration]:
    """The migrations of ``dialect`` ("sqlite" or "postgres"), oldest first."""
    folder = resources.files(__name__).joinpath(dialect)
    found: list[Migration] = []
    for item in folder.iterdir():
        if item.name.endswith(".sql"):
            number, _, rest = item.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), item.read_text()))
    return sorted(found, key=lambda m: m.version)


@cache
def recorded(dialect: str) -> frozenset[tuple[int, str]]:
    """The ``(version, name)`` rows a schema that is current for this code records; read from
    the package once per process, since a worker compares against it every time it opens."""
    return frozenset((m.version, m.name) for m in load(dialect))

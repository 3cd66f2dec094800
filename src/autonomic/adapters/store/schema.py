"""What a database holds, and whether autonomic may use it as it is asked to.

A store is pointed at a database by a URL someone typed. Before the store writes a byte into it,
or reads from it for a command, it looks at what is there and refuses what is not its own:

* nothing at all: a reader is told to create it (there is nothing to read); a writer creates
  autonomic's tables;
* autonomic's schema: used, unless it was written by a newer autonomic (its schema version is
  higher than any this code knows: a newer release may have changed what rows mean, so this one
  neither reads nor writes it) or, for a reader, it is older than this code (``migrate`` upgrades
  it; a reader never writes);
* other tables and not ours: another application's database, or a mistyped URL. Refused, unless
  someone asks on purpose to add autonomic's tables beside them (``autonomic migrate``). A
  ``schema_migrations`` table of another tool is refused even then: autonomic keeps its versions
  in a table of that name.

Which tables are "ours" is decided by the migration record, not by table names alone: the
``schema_migrations`` table with autonomic's columns and its first migration (``1``,
``initial``) recorded, beside ``runs`` and ``journal``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from enum import Enum

from autonomic.errors import ConfigError

OUR_TABLES = frozenset({"schema_migrations", "runs", "journal"})
"""Tables every autonomic schema has had since its first migration."""

MIGRATION_COLUMNS = frozenset({"version", "name", "applied_at"})
"""The columns of autonomic's ``schema_migrations`` (another tool's table of that name differs)."""

_SHOWN_TABLES = 5


class Purpose(Enum):
    """What the caller will do with the database."""

    USE = "use"
    """Read and write an existing autonomic schema as it is: never create or upgrade it."""
    CREATE = "create"
    """Create autonomic's schema where there is none, or upgrade it: refuse other tables."""
    ADOPT = "adopt"
    """As ``CREATE``, and add autonomic's tables beside other tables: asked for on purpose."""


@dataclass(frozen=True, slots=True)
class Contents:
    """What a database (a SQLite file, a PostgreSQL schema) holds, as far as autonomic cares.

    Attributes:
        tables: every table and view in it.
        versions: autonomic's migrations recorded in it; empty unless the schema is ours.
        foreign_migrations: it holds a ``schema_migrations`` table that is not autonomic's.
    """

    tables: frozenset[str]
    versions: frozenset[int]
    foreign_migrations: bool = False

    @property
    def ours(self) -> bool:
        return bool(self.versions)

    def refusal(self, purpose: Purpose, *, where: str, url: str, known: int) -> ConfigError | None:
        """Why ``purpose`` may not be done to this database, or ``None`` if it may.

        Args:
            purpose: what the caller will do.
            where: the database as a message names it (a path; a server and schema).
            url: the URL to repeat in a hint (its password already redacted).
            known: the newest schema version this code knows.
        """
        migrate = f"autonomic --db {shlex.quote(url)} migrate"
        if self.ours:
            newest = max(self.versions)
            if newest > known:
                return ConfigError(
                    f"{where} was written by a newer autonomic (schema version {newest}; this "
                    f"one knows up to {known}); nothing was read or written",
                    hint="upgrade autonomic to use this database",
                )
            if purpose is Purpose.USE and newest < known:
                return ConfigError(
                    f"{where} holds autonomic's schema at version {newest}; this autonomic "
                    f"needs version {known}",
                    hint=f"upgrade it: {migrate}",
                )
            return None
        if not self.tables:
            if purpose is Purpose.USE:
                return ConfigError(f"{where} has no autonomic schema", hint=f"create it: {migrate}")
            return None
        shown = sorted(self.tables)[:_SHOWN_TABLES]
        more = len(self.tables) - len(shown)
        holds = ("tables " if len(self.tables) > 1 else "table ") + ", ".join(shown)
        holds += f" and {more} more" if more else ""
        if self.foreign_migrations:
            return ConfigError(
                f"{where} is not an autonomic database: it holds {holds}, among them "
                "another tool's schema_migrations",
                hint="give autonomic a database (or PostgreSQL schema) of its own",
            )
        if purpose is Purpose.ADOPT:
            return None
        return ConfigError(
            f"{where} is not an autonomic database: it holds {holds}",
            hint=f"point --db at autonomic's database; to add autonomic's tables to this one on "
            f"purpose: {migrate}",
        )

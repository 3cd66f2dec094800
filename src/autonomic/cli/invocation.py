"""How the user started ``autonomic``, so the commands we print next run as printed.

A follow-up such as ``autonomic approve apr_... --as CONTROLLER`` is useless if ``autonomic`` is
not on the user's PATH (a ``.venv`` that was never activated) or if it would open another
database. So a printed command starts with the program as the user invoked it (``autonomic`` when
that name finds this very program, else the path they typed, e.g. ``.venv/bin/autonomic``) and
carries ``--db`` when the database is not the default one.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

NAME = "autonomic"


def program(argv0: str | None = None, executable: str | None = None) -> str:
    """The program part of a command the user can paste into the shell they used."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    executable = sys.executable if executable is None else executable
    invoked = Path(argv0)
    if invoked.name == NAME:  # the console script, typed as a name or as a path
        return NAME if _on_path_is(invoked) else shlex.quote(argv0)
    # ``python -m autonomic.cli``: the console script beside this interpreter, else -m again
    script = Path(executable).parent / NAME
    if script.is_file():
        return NAME if _on_path_is(script) else shlex.quote(str(script))
    return f"{shlex.quote(executable)} -m autonomic.cli"


def command(db: str, *args: str) -> str:
    """``program [--db URL] ARGS``: ``--db`` when ``db`` is neither the default nor what
    ``AUTONOMIC_DB`` already says in this environment (a password is shown as ``***``)."""
    from autonomic.adapters.store.rows import redact_url
    from autonomic.bootstrap import DEFAULT_DB

    words = [program()]
    if db not in (DEFAULT_DB, os.environ.get("AUTONOMIC_DB")):
        words += ["--db", shlex.quote(redact_url(db))]
    return " ".join([*words, *args])


def _on_path_is(path: Path) -> bool:
    """Whether typing ``autonomic`` in this environment starts ``path``."""
    found = shutil.which(NAME)
    if found is None:
        return False
    try:
        return os.path.samefile(found, path)
    except OSError:
        return False

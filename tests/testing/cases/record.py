"""Record the replay corpus: run the demos on a fresh database and export each run as a case.

    .venv/bin/python tests/testing/cases/record.py

Writes ``tests/testing/cases/*.json`` (committed; ``tests/testing/test_replay.py`` replays every
one against the current code). Run it again when a demo changes on purpose.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
CLI = [sys.executable, "-m", "autonomic.cli"]
SCENARIOS = {
    "reconciliation": [],
    "runaway": ["--scenario", "runaway"],
    "planning": ["--scenario", "planning"],
}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/record.db"
        seen: set[str] = set()
        for name, options in SCENARIOS.items():
            subprocess.run(
                [*CLI, "--db", db, "demo", *options, "--workdir", f"{tmp}/work"],
                check=False,
                capture_output=True,
            )
            listed = subprocess.run(
                [*CLI, "--db", db, "runs", "--json", "--limit", "1000"],
                check=True,
                capture_output=True,
                text=True,
            )
            new = [r for r in json.loads(listed.stdout) if r["id"] not in seen]
            for i, run in enumerate(sorted(new, key=lambda r: r["created_at"])):
                seen.add(run["id"])
                case = subprocess.run(
                    [*CLI, "--db", db, "export", run["id"]],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                suffix = f"-{i + 1}" if len(new) > 1 else ""
                path = HERE / f"demo-{name}{suffix}.json"
                path.write_text(case, encoding="utf-8")
                print(f"{path.name}: {run['agent']} {run['status']}")


if __name__ == "__main__":
    main()

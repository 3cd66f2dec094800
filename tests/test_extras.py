"""The demo and the core need no extra: a fresh `./scripts/demo` installs none of them.

The subprocess refuses to import any package that only an optional extra installs, then imports
the CLI and runs the whole demo. A core module that starts importing an extra's package fails here
(it failed once: circuit breakers imported ``purgatory`` from the ``gateway`` extra).
"""

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _extra_only_modules() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def name(requirement: str) -> str:
        for stop in "<>=;[ ~!":
            requirement = requirement.split(stop, 1)[0]
        return requirement.strip().lower().replace("-", "_")

    core = {name(r) for r in project["dependencies"]}
    extras = {name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    # import names differ from distribution names for some
    renamed = {"psycopg_binary": "psycopg", "psycopg_pool": "psycopg_pool"}
    return {renamed.get(m, m) for m in extras - core} | {"torch", "sentence_transformers"}


def test_the_demo_runs_without_any_extra(tmp_path):
    blocked = sorted(_extra_only_modules())
    assert "psycopg" in blocked
    assert "tiktoken" in blocked
    code = textwrap.dedent(
        f"""
        import sys
        BLOCKED = {blocked!r}

        class Refuse:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"{{name}} belongs to an extra", name=name)
                return None

        sys.meta_path.insert(0, Refuse())
        from autonomic.cli.app import main
        sys.argv = ["autonomic", "--db", "sqlite:///{tmp_path}/demo.db", "demo",
                    "--workdir", "{tmp_path}"]
        main()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AUTONOMIC_SANDBOX": "namespace"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "COMPLETED" in done.stdout

"""Redis in one place: the adapters under ``autonomic.adapters.redis`` import only the ports, the
core, the errors, each other and the ``redis`` library; importing them (or the gateway) never
imports ``redis``; and without the ``redis`` package each one says which extra to install."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import autonomic.adapters.redis

PACKAGE = Path(autonomic.adapters.redis.__file__).parent
ALLOWED = (
    "autonomic.ports",
    "autonomic.core",
    "autonomic.errors",
    "autonomic.adapters.redis",
)


def _imports(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "." * node.level + (node.module or "")))
    return found


def test_the_redis_adapters_import_only_ports_core_errors_and_redis():
    modules = sorted(PACKAGE.glob("*.py"))
    assert {p.stem for p in modules} >= {"counters", "breakers", "buckets", "plan_cache"}
    bad = []
    for path in modules:
        for line, name in _imports(path):
            top = name.split(".")[0]
            if name.startswith("autonomic"):
                ok = name.startswith(ALLOWED)
            else:  # no relative imports; otherwise the standard library or the client
                ok = top in sys.stdlib_module_names or top == "redis"
            if not ok:
                bad.append(f"{path.name}:{line} imports {name}")
    assert not bad


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_importing_the_adapters_or_the_gateway_does_not_import_redis():
    done = _python(
        """
        import sys
        import autonomic.adapters.redis.breakers, autonomic.adapters.redis.buckets
        import autonomic.adapters.redis.counters, autonomic.adapters.redis.plan_cache
        import autonomic.gateway, autonomic.bootstrap
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("redis", "purgatory")))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_the_redis_package_each_adapter_names_the_extra():
    done = _python(
        """
        import sys

        class Refuse:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "redis":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)

        sys.meta_path.insert(0, Refuse())
        from autonomic.adapters.redis.breakers import RedisBreakers
        from autonomic.adapters.redis.buckets import RedisBuckets
        from autonomic.adapters.redis.counters import RedisCounters
        from autonomic.adapters.redis.plan_cache import RedisPlanCache
        from autonomic.bootstrap import build_counters, build_plan_cache
        from autonomic.errors import ConfigError
        from autonomic.governance.breakers import Breakers

        URL = "redis://127.0.0.1:6379/15"
        for make in (
            lambda: RedisBreakers(URL, fallback=Breakers()),
            lambda: RedisBuckets(URL),
            lambda: RedisCounters(URL),
            lambda: RedisPlanCache(URL),
            lambda: build_counters(URL),
            lambda: build_plan_cache(URL),
        ):
            try:
                make()
            except ConfigError as exc:
                print(exc.message, "|", exc.hint)
        """
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 6, done.stdout
    for line in lines:
        assert "need Redis support (redis is missing)" in line
        assert "pip install 'autonomic[redis]'" in line


def test_the_gateway_still_offers_the_redis_adapters_by_their_old_names():
    import autonomic.gateway
    from autonomic.adapters.redis.buckets import RedisBuckets
    from autonomic.adapters.redis.plan_cache import RedisPlanCache

    assert autonomic.gateway.RedisBuckets is RedisBuckets
    assert autonomic.gateway.RedisPlanCache is RedisPlanCache
    with pytest.raises(AttributeError, match="RedisNothing"):
        _ = autonomic.gateway.RedisNothing

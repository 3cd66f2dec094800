"""``autonomic demo --scenario planning``: each kind of e-mail planned once, then reused; ``show``
prints the plan whole; ``AUTONOMIC_PLAN_CACHE`` shares plans through Redis or turns them off, and a
bad value is one clear error line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "autonomic.cli"]


def autonomic(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AUTONOMIC_")}
    full |= {"COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=120
    )


def test_demo_plans_each_kind_once_and_show_prints_the_plan(tmp_path: Path) -> None:
    result = autonomic("demo", "--scenario", "planning", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("planned by function:triage-planner (new pattern)") == 2
    assert result.stdout.count("plan reused from the cache (no planning call)") == 2
    assert "plan cache: 2 hits, 2 misses" in result.stdout
    assert "We have cancelled it" in result.stdout
    run_id = re.search(r"show (run_\w+)", result.stdout)
    assert run_id is not None
    shown = autonomic("show", run_id.group(1), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "plan reused from the cache (pattern 'where is my order <n>?" in shown.stdout
    assert "  1. Look up order <n> with order_status" in shown.stdout
    # `runs` counts each run's model calls from its journal: a planned run has one more
    listed = json.loads(autonomic("runs", "--json", cwd=tmp_path).stdout)
    calls = [r["cost"]["calls"] for r in reversed(listed)]  # oldest first: the demo's order
    assert calls[0] == calls[1] + 1  # where-is: planned, then reused
    assert calls[2] == calls[3] + 1  # cancel: planned, then reused
    table = autonomic("runs", cwd=tmp_path).stdout
    assert "model calls" in table
    assert "cost" in table


def test_plans_are_shared_between_processes_through_redis(
    tmp_path: Path, redis_server: str
) -> None:
    cache = {"AUTONOMIC_PLAN_CACHE": redis_server}
    first = autonomic("demo", "--scenario", "planning", cwd=tmp_path, env=cache)
    second = autonomic("demo", "--scenario", "planning", cwd=tmp_path, env=cache)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("plan reused from the cache") == 4  # planned by the first process
    assert "plan cache: 4 hits, 0 misses" in second.stdout


def test_the_plan_cache_can_be_turned_off(tmp_path: Path) -> None:
    result = autonomic(
        "demo", "--scenario", "planning", cwd=tmp_path, env={"AUTONOMIC_PLAN_CACHE": "off"}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(new pattern)") == 4
    assert "plan cache: off" in result.stdout


@pytest.mark.parametrize("value", ["memcached://x", "sometimes"])
def test_a_bad_plan_cache_setting_is_one_clear_line(tmp_path: Path, value: str) -> None:
    result = autonomic(
        "demo", "--scenario", "planning", cwd=tmp_path, env={"AUTONOMIC_PLAN_CACHE": value}
    )
    assert result.returncode in (1, 2)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: AUTONOMIC_PLAN_CACHE=")
    assert "redis://host:6379/0" in result.stderr

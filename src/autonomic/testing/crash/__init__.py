"""A crash harness: kill a worker at a random point of a run, resume it, and prove nothing broke.

Each trial forks a child process that starts a run of a small test agent and drives it with
``CrashAt`` armed at a seeded random fault point (``before_commit``, ``after_commit``,
``after_effect`` or ``step_done``) and occurrence. The child is SIGKILLed there; the parent then
resumes the run with a fresh ``Engine`` (the dead child's lease is taken over at once, see
``owner_is_dead``) and checks the invariants against an uncrashed reference run:

* the run ends ``COMPLETED``, or ``WAITING_FOR_HUMAN`` as *in doubt* with the intent as evidence;
* no step is lost: a completed run's tool results equal the reference's, in order; an in-doubt
  run's are a prefix of them, and the in-doubt call is the next reference step;
* no effect is duplicated: the effect sink shows no key applied twice and no operation applied
  twice (under any key);
* no model call is repeated for a turn whose response had been committed before the crash.

The test agent has two tools that write to an *effect sink*, an append-only file of JSON lines
written with ``O_APPEND`` (one ``os.write`` per call, so what a tool did survives SIGKILL):
``keyed_write`` is idempotent and dedups on the idempotency key like a real idempotent API (it
always logs an ``attempt`` and logs ``applied`` only the first time it sees a key);
``blind_write`` is not idempotent and applies every call. The model is a deterministic, stateless
function of the conversation that follows ``PLAN`` and logs one line per call (run id, turn), so the
model calls per turn can be counted afterwards.

Use ``run_trials(url, n, seed)`` for a batch (``python -m autonomic.testing.crash --db URL -n
1000`` prints its report as JSON), or the pieces (``CrashKit``, ``fork_child``, ``drive_in_child``,
``reference_run``, ``crash_trial``) for focused tests. POSIX only: children are made with ``fork``.

The package has one module per job, each importing only the ones listed before it: ``journal``
(a journal read as the checks compare runs), ``kit`` (the test agent, its plan and tools, the
effect sink and model log), ``faults`` (in-process faults: ``SimulatedCrash``, ``RaiseAt``,
``StopAt``), ``child`` (forking, driving and reaping child processes), ``trial`` (the reference
run, one crash-and-resume trial, its checks) and ``report`` (a seeded batch, its report, the command
line). Every name is importable from ``autonomic.testing.crash`` itself; to patch one, patch it
in the module that uses it (``crash.trial._resume``).
"""

from __future__ import annotations

from autonomic.testing.crash.child import (
    ChildExit,
    drive_in_child,
    fork_child,
    spawn_driver,
    wait_child,
)
from autonomic.testing.crash.faults import RaiseAt, SimulatedCrash, StopAt
from autonomic.testing.crash.journal import StepResult, chain_problems, kinds, step_results
from autonomic.testing.crash.kit import (
    AGENT_NAME,
    BLIND,
    KEYED,
    MODEL_SPEC,
    PLAN,
    CrashKit,
    Step,
    TrialFiles,
    append_jsonl,
    blind_write,
    keyed_write,
    plan_policy,
    read_jsonl,
)
from autonomic.testing.crash.report import Report, main, run_trials
from autonomic.testing.crash.trial import (
    CRASH_POINTS,
    IN_DOUBT,
    FaultHit,
    Reference,
    TrialResult,
    Violation,
    check_trial,
    crash_trial,
    reference_run,
    resume_trial,
)

__all__ = [
    "AGENT_NAME",
    "BLIND",
    "CRASH_POINTS",
    "IN_DOUBT",
    "KEYED",
    "MODEL_SPEC",
    "PLAN",
    "ChildExit",
    "CrashKit",
    "FaultHit",
    "RaiseAt",
    "Reference",
    "Report",
    "SimulatedCrash",
    "Step",
    "StepResult",
    "StopAt",
    "TrialFiles",
    "TrialResult",
    "Violation",
    "append_jsonl",
    "blind_write",
    "chain_problems",
    "check_trial",
    "crash_trial",
    "drive_in_child",
    "fork_child",
    "keyed_write",
    "kinds",
    "main",
    "plan_policy",
    "read_jsonl",
    "reference_run",
    "resume_trial",
    "run_trials",
    "spawn_driver",
    "step_results",
    "wait_child",
]

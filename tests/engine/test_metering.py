"""The metrics hook adds to prometheus_client's values directly (``adder``, ``observer``): what
it records must be exactly what ``Counter.inc`` and ``Histogram.observe`` record, in process and
in multi-process mode, whatever the amounts; and a model server's odd usage must not fail a
step."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from autonomic.engine.metering import adder, observer

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_AMOUNTS = st.lists(
    st.floats(allow_nan=True, allow_infinity=True, width=64)
    | st.sampled_from([*_BUCKETS, 0.0, -0.0, math.inf]),
    max_size=40,
)


def _samples(registry: CollectorRegistry, prefix: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.startswith(prefix) and not sample.name.endswith("_created"):
                out.append((sample.name[len(prefix) :], sample.labels, sample.value))
    return sorted(out, key=repr)


def _same(a: list, b: list) -> bool:  # type: ignore[type-arg]
    """Equal, NaN equal to NaN (a histogram's sum after observing NaN)."""
    return len(a) == len(b) and all(
        x[:2] == y[:2] and (x[2] == y[2] or (math.isnan(x[2]) and math.isnan(y[2])))
        for x, y in zip(a, b, strict=True)
    )


@given(_AMOUNTS)
def test_observer_records_what_histogram_observe_records(amounts: list[float]) -> None:
    registry = CollectorRegistry()
    fast = Histogram("fast_seconds", "h", ["phase"], buckets=_BUCKETS, registry=registry)
    slow = Histogram("slow_seconds", "h", ["phase"], buckets=_BUCKETS, registry=registry)
    observe, public = observer(fast.labels("tool")), slow.labels("tool")
    assert observe.__qualname__.startswith("observer")  # the fast path, not the fallback
    for amount in amounts:
        observe(amount)
        public.observe(amount)
    assert _same(_samples(registry, "fast"), _samples(registry, "slow"))


@given(st.lists(st.floats(min_value=0, allow_infinity=False, allow_nan=False), max_size=40))
def test_adder_records_what_counter_inc_records(amounts: list[float]) -> None:
    registry = CollectorRegistry()
    fast = Counter("fast", "c", ["tool"], registry=registry)
    slow = Counter("slow", "c", ["tool"], registry=registry)
    add, public = adder(fast.labels("pay")), slow.labels("pay")
    assert getattr(add, "__self__", None) is fast.labels("pay")._value  # the fast path
    for amount in amounts:
        add(amount)
        public.inc(amount)
    assert _same(_samples(registry, "fast"), _samples(registry, "slow"))


def test_an_unknown_client_shape_falls_back_to_the_public_methods() -> None:
    class Child:
        calls: list[float] = []

        def inc(self, amount: float) -> None:
            self.calls.append(amount)

        def observe(self, amount: float) -> None:
            self.calls.append(-amount)

        def _is_observable(self) -> bool:
            return True

    child = Child()
    adder(child)(2)
    observer(child)(3)
    assert Child.calls == [2, -3]


def test_multiprocess_values_are_the_same_as_the_clients(tmp_path, monkeypatch) -> None:
    """With PROMETHEUS_MULTIPROC_DIR the values live in the process's mmap file: the fast path
    writes there too, and the multi-process collector reads the same as after the public calls."""
    import prometheus_client.values as values
    from prometheus_client import multiprocess

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.get_value_class())
    close = values._multi_process_cleanups[-1]  # this value class's files, closed at the end
    try:
        registry = CollectorRegistry()
        fast = Histogram("mp_fast_seconds", "h", ["phase"], buckets=_BUCKETS, registry=None)
        slow = Histogram("mp_slow_seconds", "h", ["phase"], buckets=_BUCKETS, registry=None)
        count_fast = Counter("mp_fast", "c", ["tool"], registry=None)
        count_slow = Counter("mp_slow", "c", ["tool"], registry=None)
        observe, add = observer(fast.labels("tool")), adder(count_fast.labels("pay"))
        for amount in (0.003, 0.01, 0.7, 42.0, 0.0):
            observe(amount)
            slow.labels("tool").observe(amount)
            add(amount)
            count_slow.labels("pay").inc(amount)
        assert list(tmp_path.glob("histogram_*.db"))
        assert list(tmp_path.glob("counter_*.db"))
        multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
        assert _same(_samples(registry, "mp_fast"), _samples(registry, "mp_slow"))
        assert _samples(registry, "mp_fast_seconds_count")[0][2] == 5
    finally:
        close()


def test_odd_usage_from_a_model_server_adds_nothing_and_does_not_fail() -> None:
    """Tokens or a cost that are not positive (a server's garbage) are skipped: Counter.inc
    raised ValueError on a negative amount, inside the step."""
    import asyncio
    from types import SimpleNamespace

    from autonomic.engine.metering import MetricsHook
    from autonomic.observability.metrics import Metrics

    hook = MetricsHook(Metrics.get())
    usage = SimpleNamespace(input_tokens=-5, output_tokens=0)
    call = SimpleNamespace(provider="odd", usage=usage, cost=-1.0)
    turn = SimpleNamespace(call=call, model="m-odd", latency_ms=1.0)
    step = SimpleNamespace(session=SimpleNamespace(run=SimpleNamespace(model="odd:m")))
    asyncio.run(hook.after_model_call(step, turn))  # type: ignore[arg-type]
    tokens = Metrics.get().tokens.labels("odd", "m-odd", "input")
    assert tokens._value.get() == 0


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])

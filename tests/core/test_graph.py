"""The dependency-graph check: every bad graph refused with one line naming the node, and the
layers of a good one respect every dependency (property tests over random graphs)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autonomic.core.graph import (
    Graph,
    Node,
    Ref,
    Signature,
    chain,
    choose,
    fits,
    parse_graph,
    validate,
)
from autonomic.errors import GraphInvalid

TOTAL = {
    "type": "object",
    "properties": {"total": {"type": "integer"}, "note": {"type": "string"}},
    "required": ["total"],
}
CATALOG = {
    "fetch": Signature("fetch", {"type": "object", "properties": {"url": {"type": "string"}}},
                       {"type": "object", "properties": {"rows": {"type": "array",
                        "items": {"type": "object"}}}, "required": ["rows"]}),
    "sum": Signature("sum", {"type": "object", "properties": {"rows": {"type": "array"}},
                     "required": ["rows"]}, TOTAL),
    "report": Signature("report", {"type": "object", "properties": {"amount": {"type": "number"},
                        "label": {"type": "string"}}, "additionalProperties": False}, None),
}  # fmt: skip


def good() -> dict[str, Any]:
    return {
        "nodes": [
            {"id": "a", "uses": "fetch", "inputs": {"url": "https://x"}},
            {"id": "b", "uses": "fetch", "inputs": {"url": "https://y"}},
            {"id": "s", "uses": "sum", "inputs": {"rows": {"$ref": "a.rows"}}, "after": ["b"]},
            {"id": "r", "uses": "report", "inputs": {"amount": {"$ref": "s.total"}}},
        ]
    }


def refused(raw: Any, **kw: Any) -> GraphInvalid:
    with pytest.raises(GraphInvalid) as caught:
        validate(parse_graph(raw), CATALOG, **kw)
    assert "\n" not in caught.value.message
    return caught.value


def test_a_valid_graph_has_layers_of_independent_nodes() -> None:
    graph = parse_graph(good())
    assert validate(graph, CATALOG) == (("a", "b"), ("s",), ("r",))
    assert graph.ready({"a"}) == ("b",)
    assert graph.ready({"a", "b"}) == ("s",)
    assert graph.resolve("s", {"a": {"rows": [1, 2]}}) == {"rows": [1, 2]}
    assert parse_graph(graph.to_json()) == graph


def test_a_cycle_is_refused_naming_its_path() -> None:
    raw = good()
    raw["nodes"][0]["after"] = ["r"]
    error = refused(raw)
    assert "cycle: a -> r -> s -> a" in error.message
    assert error.node == "a"


def test_a_node_waiting_for_itself_is_a_cycle() -> None:
    raw = {"nodes": [{"id": "a", "after": ["a"]}]}
    assert "a -> a" in refused(raw).message


def test_an_unknown_capability_is_refused_naming_the_node() -> None:
    raw = good()
    raw["nodes"][1]["uses"] = "delete_everything"
    error = refused(raw)
    assert error.node == "b"
    assert "'delete_everything', which is not known (known: fetch, report, sum)" in error.message


def test_a_reference_to_a_missing_node_is_refused() -> None:
    raw = good()
    raw["nodes"][2]["inputs"]["rows"] = {"$ref": "ghost.rows"}
    error = refused(raw)
    assert error.node == "s"
    assert "'ghost'" in error.message


def test_an_output_that_does_not_fit_the_next_input_is_refused() -> None:
    raw = good()
    raw["nodes"][3]["inputs"] = {"label": {"$ref": "s.total"}}  # an integer into a string
    error = refused(raw)
    assert error.node == "r"
    assert "input 'label' takes s.total, which does not fit: integer" in error.message


def test_a_field_the_output_does_not_have_is_refused() -> None:
    raw = good()
    raw["nodes"][3]["inputs"] = {"amount": {"$ref": "s.sum"}}
    assert "s.sum is not a field of s's output (sum)" in refused(raw).message


def test_a_literal_input_is_checked_against_the_schema() -> None:
    raw = good()
    raw["nodes"][0]["inputs"] = {"url": 42}
    assert "input 'url' is invalid" in refused(raw).message
    raw = good()
    raw["nodes"][3]["inputs"]["colour"] = "red"
    assert "unknown input 'colour'" in refused(raw).message


def test_too_many_nodes_and_duplicate_ids_are_refused() -> None:
    assert "more than the 3 allowed" in refused(good(), max_nodes=3).message
    raw = good()
    raw["nodes"][1]["id"] = "a"
    assert "two nodes have the id 'a'" in refused(raw).message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([], "non-empty list of nodes"),
        ({"nodes": "a"}, "non-empty list of nodes"),
        ([42], "node 1 is not an object"),
        ([{"id": "1bad"}], "node 1 has no valid id"),
        ([{"id": "a", "after": "b"}], "'after' must be a list"),
        ([{"id": "a", "inputs": {"x": {"$ref": 3}}}], "malformed reference"),
        ([{"id": "a", "uses": ""}], "'uses' must name"),
    ],
)
def test_malformed_json_is_refused_with_the_reason(raw: Any, expected: str) -> None:
    with pytest.raises(GraphInvalid, match=expected):
        parse_graph(raw)


def test_require_uses() -> None:
    with pytest.raises(GraphInvalid, match="does not say what it uses"):
        validate(chain(["one"]), CATALOG, require_uses=True)


def test_choose_falls_back_to_the_template_with_the_reason() -> None:
    template = Graph((Node("t", uses="fetch"),))
    bad = good()
    bad["nodes"][1]["uses"] = "nope"
    choice = choose(bad, CATALOG, template=template)
    assert choice.source == "template"
    assert choice.graph is template
    assert choice.rejected is not None
    assert "'nope'" in choice.rejected
    assert choose(good(), CATALOG, template=template).source == "proposed"
    with pytest.raises(GraphInvalid, match="no template"):
        choose(bad, CATALOG, template=None)
    with pytest.raises(GraphInvalid, match="the template graph is invalid"):
        choose(bad, CATALOG, template=Graph((Node("t", uses="nope"),)))


def test_a_list_is_a_chain() -> None:
    assert chain(["x", "y", "z"]).layers() == (("s1",), ("s2",), ("s3",))


def test_fits() -> None:
    assert fits({"type": "integer"}, {"type": "number"}) is None
    assert fits({"type": "number"}, {"type": "integer"}) is not None
    assert fits({"enum": ["a", "b"]}, {"enum": ["a", "b", "c"]}) is None
    assert "not one of" in str(fits({"enum": ["a", "z"]}, {"enum": ["a"]}))
    assert fits({"type": "object"}, {"type": "object", "required": ["k"]}) is not None
    nested_ok = {
        "type": "array",
        "items": {"type": "object", "properties": {"n": {"type": "integer"}}},
    }
    nested_bad = {
        "type": "array",
        "items": {"type": "object", "properties": {"n": {"type": "string"}}},
    }
    assert fits(nested_ok, nested_ok) is None
    assert "[].n" in str(fits(nested_ok, nested_bad))
    assert fits({}, {"type": "string"}) is None  # undeclared: not held against the graph
    assert Ref("a", ("x", "y")).pick({"x": {"y": 3}}) == 3


# -- properties ------------------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> Graph:
    """A random DAG: each node may wait only for nodes before it."""
    n = draw(st.integers(min_value=1, max_value=25))
    nodes = []
    for i in range(n):
        deps = draw(st.sets(st.integers(min_value=0, max_value=i - 1), max_size=4)) if i else set()
        refs = draw(st.sets(st.sampled_from(sorted(deps)), max_size=2)) if deps else set()
        inputs = {f"in{j}": Ref(f"n{j}") for j in refs}
        after = tuple(f"n{j}" for j in sorted(deps - refs))
        nodes.append(Node(f"n{i}", inputs=inputs, after=after))
    order = draw(st.permutations(nodes))
    return Graph(tuple(order))


@settings(max_examples=100, deadline=None)
@given(dags())
def test_layers_respect_every_dependency_and_cover_every_node(graph: Graph) -> None:
    layers = validate(graph, None)
    flat = [i for layer in layers for i in layer]
    assert sorted(flat) == sorted(graph.ids)
    level = {i: k for k, layer in enumerate(layers) for i in layer}
    for node in graph.nodes:
        for dep in node.needs:
            assert level[dep] < level[node.id]
        # a node sits in the first layer it can: one of its needs is in the layer right before
        if node.needs:
            assert max(level[d] for d in node.needs) == level[node.id] - 1


@settings(max_examples=100, deadline=None)
@given(dags(), st.data())
def test_an_added_back_edge_is_always_refused_as_a_cycle(graph: Graph, data: st.DataObject) -> None:
    edges = [(n.id, d) for n in graph.nodes for d in n.needs]
    if not edges:
        return
    waiter, waited = data.draw(st.sampled_from(edges))
    # ``waited`` now also waits for ``waiter``: a cycle through both
    nodes = tuple(
        Node(n.id, inputs=n.inputs, after=(*n.after, waiter)) if n.id == waited else n
        for n in graph.nodes
    )
    with pytest.raises(GraphInvalid, match="cycle") as caught:
        validate(Graph(nodes), None)
    cycle = caught.value.message.split("cycle: ")[1].split(" (")[0].split(" -> ")
    assert cycle[0] == cycle[-1]
    named = {n.id: n for n in nodes}
    for a, b in itertools.pairwise(cycle):
        assert b in named[a].needs  # every link of the named cycle is a real wait


@settings(max_examples=100, deadline=None)
@given(dags(), st.data())
def test_a_dangling_reference_is_always_refused_naming_its_node(
    graph: Graph, data: st.DataObject
) -> None:
    victim = data.draw(st.sampled_from(graph.nodes))
    nodes = tuple(
        Node(n.id, inputs={**n.inputs, "x": Ref("missing")}, after=n.after)
        if n.id == victim.id
        else n
        for n in graph.nodes
    )
    with pytest.raises(GraphInvalid) as caught:
        validate(Graph(nodes), None)
    assert caught.value.node == victim.id


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_garbage_is_refused_or_parsed_never_crashes(raw: Any) -> None:  # fmt: skip
    problems: list[str] = []
    try:
        validate(parse_graph(raw), CATALOG)
    except GraphInvalid as exc:
        problems.append(exc.message)
    assert all("\n" not in p for p in problems)

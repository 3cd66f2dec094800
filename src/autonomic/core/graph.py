"""A dependency graph of steps or subtasks, and the one check that decides whether it may run.

Plans come from models, so a graph is untrusted input until ``validate`` says otherwise. The
planning phase (``engine/planning.py``) plans an agent's steps as a graph, and a coordinator of
child runs can plan subtasks the same way: either way a node names *what it uses* - a tool or a
capability, described here only by a ``Signature`` (its input and output JSON schemas) - its
literal inputs or references to earlier nodes' outputs, and the nodes it waits for.

``validate`` refuses, with one line naming the node, what must never start: a cycle (named as
the path ``a -> b -> a``), a node that uses something not in the catalog, a reference to a
node that does not exist, an input the used signature does not accept, an output that does not
fit the input it is wired to (a structural check of the two JSON schemas: types, required
fields, array items, enums), too many nodes. A valid graph knows its **layers**: the nodes whose
dependencies are all in earlier layers, i.e. the nodes that may run at the same time.

``choose`` is the fallback rule: a model's proposal that does not validate is replaced by the
declared template, and the reason travels with the choice so it can be journaled.

Pure: no I/O, no clock; the same graph always gives the same layers (ids sorted within a layer).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

import jsonschema
import jsonschema.exceptions

from autonomic.errors import GraphInvalid

__all__ = [
    "MAX_NODES",
    "Choice",
    "Graph",
    "Node",
    "Ref",
    "Signature",
    "chain",
    "choose",
    "fallback",
    "fits",
    "parse_graph",
    "validate",
]

MAX_NODES = 50
"""The most nodes a graph may have unless the caller says otherwise."""
MAX_TEXT = 300
MAX_INPUTS = 32
_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Ref:
    """An input taken from another node's output: the whole output, or the field at ``path``.
    In JSON: ``{"$ref": "node"}`` or ``{"$ref": "node.field.sub"}``."""

    node: str
    path: tuple[str, ...] = ()

    def to_json(self) -> dict[str, str]:
        return {"$ref": ".".join((self.node, *self.path))}

    def pick(self, output: Any) -> Any:
        """The referenced part of ``output`` (``KeyError`` naming the field when it is absent)."""
        value = output
        for i, key in enumerate(self.path):
            if not isinstance(value, Mapping) or key not in value:
                raise KeyError(f"{self.node}.{'.'.join(self.path[: i + 1])}")
            value = value[key]
        return value


@dataclass(frozen=True, slots=True)
class Signature:
    """What a node may use: a tool or a capability, by name, with its schemas (``None``: not
    declared, so not checked)."""

    name: str
    input_schema: Mapping[str, Any] | None = None
    output_schema: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Node:
    """One step or subtask: its ``id``, what it ``uses``, its inputs (literal values or ``Ref``),
    the nodes it waits for besides those it references (``after``), and what to do, in words."""

    id: str
    uses: str | None = None
    inputs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    after: tuple[str, ...] = ()
    text: str = ""

    @property
    def needs(self) -> frozenset[str]:
        """Every node this one waits for: ``after`` and each node an input references."""
        refs = {v.node for v in self.inputs.values() if isinstance(v, Ref)}
        return frozenset(self.after) | refs

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if self.uses is not None:
            out["uses"] = self.uses
        if self.text:
            out["do"] = self.text
        if self.inputs:
            out["inputs"] = {
                k: v.to_json() if isinstance(v, Ref) else v for k, v in self.inputs.items()
            }
        if self.after:
            out["after"] = list(self.after)
        return out


@dataclass(frozen=True, slots=True)
class Graph:
    """Nodes in the order they were given. Build it with ``parse_graph`` (untrusted JSON) or
    directly, then ``validate`` it; ``layers`` and ``resolve`` assume a validated graph."""

    nodes: tuple[Node, ...]
    given: frozenset[str] = frozenset()
    """Names an input may reference that are not nodes but given from the start (a
    coordinator's ``task``): never waited for."""

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.nodes)

    def layers(self) -> tuple[tuple[str, ...], ...]:
        """The nodes level by level: each layer's nodes depend only on earlier layers, so they
        may run in parallel. Raises ``GraphInvalid`` naming a cycle."""
        needs = {n.id: set(n.needs) - self.given for n in self.nodes}
        done: set[str] = set()
        layers: list[tuple[str, ...]] = []
        while len(done) < len(needs):
            ready = sorted(i for i, deps in needs.items() if i not in done and deps <= done)
            if not ready:
                cycle = _cycle({i: d for i, d in needs.items() if i not in done})
                raise GraphInvalid(
                    f"the graph has a cycle: {' -> '.join(cycle)} (each waits for the next)",
                    node=cycle[0],
                    hint="a node may only wait for nodes that do not wait for it",
                )
            layers.append(tuple(ready))
            done.update(ready)
        return tuple(layers)

    def order(self) -> tuple[str, ...]:
        """One topological order (the layers, flattened)."""
        return tuple(i for layer in self.layers() for i in layer)

    def ready(self, done: Iterable[str]) -> tuple[str, ...]:
        """Nodes not in ``done`` whose dependencies all are: what may start now."""
        finished = set(done) | self.given
        return tuple(
            sorted(n.id for n in self.nodes if n.id not in finished and n.needs <= finished)
        )

    def resolve(self, node_id: str, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """``node_id``'s inputs with every reference replaced by the output it names."""
        return {
            k: v.pick(outputs[v.node]) if isinstance(v, Ref) else v
            for k, v in self.node(node_id).inputs.items()
        }

    def to_json(self) -> dict[str, Any]:
        return {"nodes": [n.to_json() for n in self.nodes]}


def chain(steps: Sequence[str], *, prefix: str = "s") -> Graph:
    """A list of steps as a graph: each waits for the one before (how a flat plan reads)."""
    nodes = []
    for i, text in enumerate(steps, start=1):
        after = (f"{prefix}{i - 1}",) if i > 1 else ()
        nodes.append(Node(id=f"{prefix}{i}", text=text, after=after))
    return Graph(tuple(nodes))


def parse_graph(
    raw: Any, *, max_nodes: int = MAX_NODES, given: frozenset[str] = frozenset()
) -> Graph:
    """A graph from untrusted JSON - ``{"nodes": [...]}`` or ``{"steps": [...]}`` or a bare
    list of node objects - or ``GraphInvalid`` saying what is malformed, by node."""
    items = raw.get("nodes", raw.get("steps")) if isinstance(raw, Mapping) else raw
    if not isinstance(items, list) or not items:
        raise GraphInvalid(
            'a graph is a non-empty list of nodes: {"nodes": [{"id": "a", "uses": "tool", '
            '"after": []}, ...]}'
        )
    if len(items) > max_nodes:
        raise GraphInvalid(f"the graph has {len(items)} nodes, more than the {max_nodes} allowed")
    nodes = [_node(item, i) for i, item in enumerate(items, start=1)]
    return Graph(tuple(nodes), given)


def _node(item: Any, index: int) -> Node:
    where = f"node {index}"
    if not isinstance(item, Mapping):
        raise GraphInvalid(f"{where} is not an object with an id")
    node_id = item.get("id")
    if not isinstance(node_id, str) or not _ID.match(node_id):
        raise GraphInvalid(
            f"{where} has no valid id (a letter, then up to 63 letters, digits, '_', '-', '.')"
        )
    where = f"node {node_id!r}"
    uses = item.get("uses", item.get("tool", item.get("capability")))
    if uses is not None and (not isinstance(uses, str) or not uses.strip()):
        raise GraphInvalid(f"{where}: 'uses' must name a tool or capability", node=node_id)
    text = item.get("do", item.get("text", ""))
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise GraphInvalid(
            f"{where}: 'do' must be a string of at most {MAX_TEXT} characters", node=node_id
        )
    after = item.get("after", [])
    if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
        raise GraphInvalid(f"{where}: 'after' must be a list of node ids", node=node_id)
    inputs = item.get("inputs", {})
    if not isinstance(inputs, Mapping) or len(inputs) > MAX_INPUTS:
        raise GraphInvalid(
            f"{where}: 'inputs' must be an object of at most {MAX_INPUTS} fields", node=node_id
        )
    parsed: dict[str, Any] = {}
    for key, value in inputs.items():
        if isinstance(value, Mapping) and "$ref" in value:
            ref = value["$ref"]
            if not isinstance(ref, str) or not ref or len(value) != 1:
                raise GraphInvalid(
                    f"{where}: input {key!r} is a malformed reference (use "
                    '{"$ref": "node"} or {"$ref": "node.field"})',
                    node=node_id,
                )
            head, *path = ref.split(".")
            parsed[str(key)] = Ref(head, tuple(path))
        else:
            parsed[str(key)] = value
    return Node(
        id=node_id,
        uses=uses.strip() if isinstance(uses, str) else None,
        inputs=MappingProxyType(parsed),
        after=tuple(dict.fromkeys(after)),
        text=" ".join(text.split()),
    )


def validate(
    graph: Graph,
    catalog: Mapping[str, Signature] | None,
    *,
    max_nodes: int = MAX_NODES,
    require_uses: bool = False,
) -> tuple[tuple[str, ...], ...]:
    """Check ``graph`` against ``catalog`` (what its nodes may use; ``None``: anything) and
    return its layers; ``GraphInvalid`` with the first problem, naming the node, otherwise.

    ``require_uses``: every node must name what it uses (a coordinator's subtasks must; a plan's
    steps may be free text)."""
    if not graph.nodes:
        raise GraphInvalid("the graph has no nodes")
    if len(graph.nodes) > max_nodes:
        raise GraphInvalid(
            f"the graph has {len(graph.nodes)} nodes, more than the {max_nodes} allowed"
        )
    seen: set[str] = set()
    for node in graph.nodes:
        if node.id in seen:
            raise GraphInvalid(f"two nodes have the id {node.id!r}", node=node.id)
        if node.id in graph.given:
            raise GraphInvalid(
                f"node id {node.id!r} is reserved (it names the coordinator's input)",
                node=node.id,
            )
        seen.add(node.id)
    for node in graph.nodes:
        for dep in sorted(node.needs - graph.given):
            if dep not in seen:
                raise GraphInvalid(
                    f"node {node.id!r} waits for or references {dep!r}, which is not a node of "
                    "the graph",
                    node=node.id,
                )
            if dep == node.id:
                raise GraphInvalid(
                    f"the graph has a cycle: {dep} -> {dep} (it waits for itself)", node=dep
                )
        if node.uses is None:
            if require_uses:
                raise GraphInvalid(f"node {node.id!r} does not say what it uses", node=node.id)
            continue
        if catalog is not None and node.uses not in catalog:
            known = ", ".join(sorted(catalog)) or "none"
            raise GraphInvalid(
                f"node {node.id!r} uses {node.uses!r}, which is not known (known: {known})",
                node=node.id,
            )
    layers = graph.layers()
    if catalog is not None:
        for node in graph.nodes:
            if node.uses is not None:
                _check_inputs(graph, node, catalog)
    return layers


def _check_inputs(graph: Graph, node: Node, catalog: Mapping[str, Signature]) -> None:
    schema = catalog[node.uses or ""].input_schema
    if not schema:
        return
    where = f"node {node.id!r} ({node.uses})"
    props = schema.get("properties")
    properties: Mapping[str, Any] = props if isinstance(props, Mapping) else {}
    if schema.get("additionalProperties") is False:
        extra = sorted(set(node.inputs) - set(properties))
        if extra:
            raise GraphInvalid(f"{where}: unknown input {extra[0]!r}", node=node.id)
    for key, value in node.inputs.items():
        accepted = properties.get(key)
        if not isinstance(accepted, Mapping):
            continue
        if isinstance(value, Ref):
            produced = _at(graph, value, catalog)
            if produced is None:
                continue
            if isinstance(produced, str):
                raise GraphInvalid(f"{where}: input {key!r}: {produced}", node=node.id)
            problem = fits(produced, accepted)
            if problem is not None:
                raise GraphInvalid(
                    f"{where}: input {key!r} takes {'.'.join((value.node, *value.path))}, "
                    f"which does not fit: {problem}",
                    node=node.id,
                )
        else:
            error = jsonschema.exceptions.best_match(
                jsonschema.Draft202012Validator(accepted).iter_errors(value)
            )
            if error is not None:
                raise GraphInvalid(
                    f"{where}: input {key!r} is invalid: {error.message[:200]}", node=node.id
                )


def _at(graph: Graph, ref: Ref, catalog: Mapping[str, Signature]) -> Mapping[str, Any] | str | None:
    """The schema of what ``ref`` points at; ``None`` when undeclared (unchecked); a string
    when the declared output has no such field."""
    if ref.node in graph.given:
        return None
    uses = graph.node(ref.node).uses
    signature = catalog.get(uses) if uses is not None else None
    schema = signature.output_schema if signature is not None else None
    if not schema:
        return None
    for i, key in enumerate(ref.path):
        props = schema.get("properties")
        if isinstance(props, Mapping) and isinstance(props.get(key), Mapping):
            schema = props[key]
            continue
        if isinstance(props, Mapping) or schema.get("additionalProperties") is False:
            name = ".".join((ref.node, *ref.path[: i + 1]))
            return f"{name} is not a field of {ref.node}'s output ({uses})"
        return None
    return schema


_TYPES = ("null", "boolean", "object", "array", "number", "integer", "string")


def _types(schema: Mapping[str, Any]) -> set[str] | None:
    declared = schema.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {t for t in declared if isinstance(t, str)}
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else list(schema.get("enum") or [])
        return {_type_of(v) for v in values}
    return None


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def fits(produced: Mapping[str, Any], accepted: Mapping[str, Any], where: str = "") -> str | None:
    """Why a value valid under ``produced`` may be refused by ``accepted`` (``None``: it fits).

    A structural check, not a proof: types (an integer fits a number), the fields ``accepted``
    requires (``produced`` must require them too), each property both declare, array items and
    enums. Whatever one side leaves undeclared is not held against the graph."""
    at = f" at {where}" if where else ""
    mine, theirs = _types(produced), _types(accepted)
    if mine is not None and theirs is not None:
        widened = theirs | ({"integer"} if "number" in theirs else set())
        extra = sorted(mine - widened)
        if extra:
            return f"{'/'.join(extra)}{at} where {'/'.join(sorted(theirs))} is expected"
    if "enum" in accepted and isinstance(accepted["enum"], list):
        values = [produced["const"]] if "const" in produced else produced.get("enum")
        if isinstance(values, list):
            outside = [v for v in values if v not in accepted["enum"]]
            if outside:
                return f"value {outside[0]!r}{at} is not one of {accepted['enum']!r}"
    required = accepted.get("required")
    if isinstance(required, list) and (mine is None or "object" in mine):
        have = produced.get("required")
        guaranteed = set(have) if isinstance(have, list) else set()
        for name in required:
            if name not in guaranteed:
                field_at = f"{where}.{name}" if where else str(name)
                return f"field {field_at!r} is required but the output does not guarantee it"
    theirs_props = accepted.get("properties")
    mine_props = produced.get("properties")
    if isinstance(theirs_props, Mapping) and isinstance(mine_props, Mapping):
        for name in sorted(set(theirs_props) & set(mine_props)):
            a, p = theirs_props[name], mine_props[name]
            if isinstance(a, Mapping) and isinstance(p, Mapping):
                problem = fits(p, a, f"{where}.{name}" if where else str(name))
                if problem is not None:
                    return problem
    items_a, items_p = accepted.get("items"), produced.get("items")
    if isinstance(items_a, Mapping) and isinstance(items_p, Mapping):
        return fits(items_p, items_a, f"{where}[]" if where else "[]")
    return None


def _cycle(needs: Mapping[str, set[str]]) -> list[str]:
    """One cycle among ``needs`` (every node there waits for another there), as a closed path
    starting from its smallest id."""
    start = min(needs)
    path: list[str] = []
    seen: dict[str, int] = {}
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = min(d for d in needs[node] if d in needs)
    loop = path[seen[node] :]
    first = loop.index(min(loop))
    loop = loop[first:] + loop[:first]
    return [*loop, loop[0]]


class Choice(NamedTuple):
    """The graph to run and where it came from: ``proposed`` or ``template``, with the reason a
    proposal was refused."""

    graph: Graph
    layers: tuple[tuple[str, ...], ...]
    source: str
    rejected: str | None = None


def choose(
    raw: Any,
    catalog: Mapping[str, Signature] | None,
    *,
    template: Graph | None,
    max_nodes: int = MAX_NODES,
    require_uses: bool = False,
    given: frozenset[str] = frozenset(),
) -> Choice:
    """The proposed graph if it parses and validates, else the declared ``template`` (with the
    proposal's problem as ``rejected``). ``GraphInvalid`` when neither may run - the template
    is the developer's, so its problem says what to fix in the code."""
    try:
        graph = parse_graph(raw, max_nodes=max_nodes, given=given)
        layers = validate(graph, catalog, max_nodes=max_nodes, require_uses=require_uses)
        return Choice(graph, layers, "proposed")
    except GraphInvalid as exc:
        rejected = exc.message
    return fallback(
        rejected, catalog, template=template, max_nodes=max_nodes, require_uses=require_uses
    )


def fallback(
    rejected: str,
    catalog: Mapping[str, Signature] | None,
    *,
    template: Graph | None,
    max_nodes: int = MAX_NODES,
    require_uses: bool = False,
) -> Choice:
    """The declared ``template`` instead of a proposal refused for ``rejected`` (or never made);
    ``GraphInvalid`` when there is none or it does not validate."""
    if template is None:
        raise GraphInvalid(
            f"the proposed graph was rejected ({rejected}) and there is no template to fall back on"
        )
    try:
        layers = validate(template, catalog, max_nodes=max_nodes, require_uses=require_uses)
    except GraphInvalid as exc:
        raise GraphInvalid(
            f"the template graph is invalid: {exc.message}", node=exc.node,
            hint="fix the declared template",
        ) from None  # fmt: skip
    return Choice(template, layers, "template", rejected)

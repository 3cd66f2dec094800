"""A tiny, safe expression language for policy rules, exit conditions and invariants.

Rules such as ``args.amount_cents > 100000`` or ``calls.compute_differences >= 1`` are parsed
with Python's ``ast`` and evaluated by walking a whitelist of node types: names resolve in a
context of plain data, ``a.b`` reads key ``b`` of a mapping, and there are no calls except
``abs``, ``len``, ``min`` and ``max``. Nothing is ``eval``-ed, nothing can reach the host. The same
expression over the same run state always gives the same answer, which makes invariants
deterministic and replayable.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

from autonomic.errors import InvalidInput

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.FloorDiv: operator.floordiv,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {"abs": abs, "len": len, "min": min, "max": max}
_ALLOWED = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.BinOp,
    ast.Compare,
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.Attribute,
    ast.Subscript,
    ast.List,
    ast.Tuple,
    ast.Call,
    *_BINARY,
    *_COMPARE,
)


class Missing:
    """The value of a name or key that is not there; compares unequal to everything, is falsy."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "missing"


MISSING = Missing()


class Expression:
    """A parsed, checked expression. ``Expression("args.amount > 5")(context)``."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("an expression must be non-empty text")
        self.text = text
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise InvalidInput(
                f"cannot parse expression {text!r}: {exc.msg}",
                hint="write e.g. args.amount_cents > 100000 and tenant == 'acme'",
            ) from None
        for node in ast.walk(tree):
            if not isinstance(node, _ALLOWED):
                raise InvalidInput(
                    f"expression {text!r} uses {type(node).__name__}, which is not allowed",
                    hint="use names, a.b, a[0], comparisons, and/or/not, + - * / and "
                    "abs/len/min/max",
                )
            if isinstance(node, ast.Call) and not (
                isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
            ):
                raise InvalidInput(
                    f"expression {text!r} calls something other than abs, len, min or max"
                )
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                raise InvalidInput(f"expression {text!r} reads a private name {node.attr!r}")
        self._tree = tree

    def __call__(self, context: Mapping[str, Any]) -> Any:
        """Evaluate; a type error (comparing text with a number, say) raises ``InvalidInput``."""
        try:
            return _eval(self._tree.body, context)
        except (TypeError, ZeroDivisionError, ValueError) as exc:
            raise InvalidInput(f"expression {self.text!r} failed: {exc}") from None

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


def _eval(node: ast.expr, ctx: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in ("true", "True"):
            return True
        if node.id in ("false", "False"):
            return False
        if node.id in ("null", "None"):
            return None
        return ctx.get(node.id, MISSING)
    if isinstance(node, ast.Attribute):
        return _member(_eval(node.value, ctx), node.attr)
    if isinstance(node, ast.Subscript):
        return _member(_eval(node.value, ctx), _eval(node.slice, ctx))
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            value: Any = True
            for item in node.values:
                value = _eval(item, ctx)
                if not value:
                    return value
            return value
        for item in node.values:
            value = _eval(item, ctx)
            if value:
                return value
        return value
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, ctx)
        return (not operand) if isinstance(node.op, ast.Not) else -_number(operand)
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](
            _number(_eval(node.left, ctx)), _number(_eval(node.right, ctx))
        )
    if isinstance(node, ast.Compare):
        left = _eval(node.left, ctx)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, ctx)
            if isinstance(left, Missing) or isinstance(right, Missing):
                if not isinstance(op, ast.NotEq | ast.NotIn):
                    return False
            elif not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.List | ast.Tuple):
        return [_eval(e, ctx) for e in node.elts]
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)  # checked at parse time
        return _FUNCTIONS[node.func.id](*(_eval(a, ctx) for a in node.args))
    raise InvalidInput(f"unsupported expression element {type(node).__name__}")


def _member(container: Any, key: Any) -> Any:
    if isinstance(container, Mapping):
        return container.get(key, MISSING)
    if isinstance(container, list | tuple) and isinstance(key, int):
        return container[key] if -len(container) <= key < len(container) else MISSING
    return MISSING


def _number(value: Any) -> Any:
    if isinstance(value, Missing):
        raise TypeError("a missing value is not a number")
    return value

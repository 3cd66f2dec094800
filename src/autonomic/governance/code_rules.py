"""The code gate's own AST rules: an allow-list of what generated code may reach.

A deny-list of dangerous names always trails the attacker (``sys.modules["os"]``,
``vars(builtins)["__imp" + "ort__"]``, ``importlib`` with a concatenated name all passed the old
one). So the rules say what code *may* do and refuse the rest:

* ``AUT001`` — only modules on the import allow-list (``Allowances.imports``); no star or relative
  imports (they bind names the gate cannot see);
* ``AUT002`` — ``os.system``/``exec*``/``spawn*``/... (only relevant if a policy allows ``os``);
* ``AUT003`` — dynamic code and computed names: ``eval``/``exec``/``compile``/``__import__`` named
  at all, ``getattr``/``setattr``/``delattr``/``hasattr`` with a non-literal name or used as a
  value, ``operator.attrgetter``/``methodcaller`` with a non-literal name;
* ``AUT004`` — escape gadgets: a dunder attribute or name not on ``Allowances.dunders``
  (``__subclasses__``, ``__globals__``, ``__mro__``, ``__code__``, ``__builtins__``, ``__self__``
  ...), frame, code and traceback attributes (``gi_frame``, ``f_globals``, ``tb_frame``, ``mro``
  ...), and string literals naming such a dunder (format strings and ``attrgetter`` walk them);
* ``AUT005`` — ``open``: with ``open: workspace`` (the default) only a literal path inside the
  work dir; ``open: none`` refuses it; ``open: any`` leaves paths to the sandbox;
* ``AUT006`` — introspection that reaches namespaces: ``vars``, ``globals``, ``locals``,
  ``breakpoint``, ``help``;
* ``AUT007`` — a module used as a value (passed, assigned, returned): a module may only be used
  as ``module.name``, so nothing can walk it with computed names;
* ``AUT008`` — a module's private attribute (``random._os``) or an attribute that is itself a
  module not on the allow-list (``typing.sys``, ``contextlib.os``): allowed modules re-export the
  ones they import.

Every rule is HIGH (blocks by default); a policy can ``ignore`` one. The rules are still a filter:
the sandbox assumes everything gets through.
"""

from __future__ import annotations

import ast
import functools
import importlib
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from autonomic.governance.decision import Finding, Risk, Verdict

CHECK = "code"
"""The name the code gate's findings and decisions carry."""

OpenMode = Literal["none", "workspace", "any"]
OPEN_MODES: tuple[OpenMode, ...] = ("none", "workspace", "any")

DEFAULT_IMPORTS = frozenset(
    {
        # numbers and statistics
        "math",
        "cmath",
        "statistics",
        "decimal",
        "fractions",
        "numbers",
        "random",
        # text and data formats
        "json",
        "csv",
        "re",
        "string",
        "textwrap",
        "unicodedata",
        "difflib",
        "base64",
        "binascii",
        "hashlib",
        "zlib",
        "struct",
        "html",
        "ipaddress",
        "uuid",
        # dates and times
        "datetime",
        "time",
        "calendar",
        "zoneinfo",
        # collections and functional tools
        "collections",
        "itertools",
        "functools",
        "operator",
        "heapq",
        "bisect",
        "array",
        "copy",
        "pprint",
        "graphlib",
        # typing and structure
        "typing",
        "dataclasses",
        "enum",
        "abc",
    }
)
"""What data-analysis code may import unless the policy says otherwise. Left out on purpose:
``os``, ``sys``, ``io``/``gzip``/``pathlib`` (they open any path), ``importlib``, ``builtins``,
``inspect``, ``types``, ``ctypes``, ``subprocess``, ``socket``/``urllib``/``http`` (the network),
``pickle``/``marshal`` (they run code), ``threading``/``multiprocessing``, ``shutil``."""

DEFAULT_DUNDERS = frozenset(
    {
        "__init__",
        "__post_init__",
        "__name__",
        "__qualname__",
        "__doc__",
        "__module__",
        "__class__",
        "__slots__",
        "__len__",
        "__iter__",
        "__next__",
        "__contains__",
        "__getitem__",
        "__setitem__",
        "__repr__",
        "__str__",
        "__hash__",
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__add__",
        "__sub__",
        "__mul__",
        "__truediv__",
        "__enter__",
        "__exit__",
        "__main__",
        "__file__",
        "__debug__",
    }
)
"""Dunder names code may use: protocol methods a class defines or calls on ``super()``, and
names. Everything else (``__subclasses__``, ``__globals__``, ``__mro__``, ``__base__``,
``__code__``, ``__builtins__``, ``__self__``, ``__dict__``, ``__reduce__``, ``__loader__`` ...)
is a step of an escape walk."""

GADGET_ATTRIBUTES = frozenset(
    {
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "cr_frame",
        "cr_code",
        "cr_await",
        "ag_frame",
        "ag_code",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "f_code",
        "tb_frame",
        "tb_next",
        "co_code",
        "co_consts",
        "co_names",
        "mro",
        "get_field",
        "get_type_hints",
        "ForwardRef",
        "func_globals",
    }
)
"""Attributes without underscores that reach frames, code objects, globals or evaluation."""

DYNAMIC_CODE = frozenset({"eval", "exec", "compile", "__import__"})
INTROSPECTION = frozenset({"vars", "globals", "locals", "breakpoint", "help"})
ATTRIBUTE_FUNCTIONS = frozenset({"getattr", "setattr", "delattr", "hasattr"})
NAME_WALKERS = frozenset({"attrgetter", "methodcaller"})

WHY_NOT: Mapping[str, str] = {
    "os": "reaches the file system, processes and the environment",
    "sys": "reaches sys.modules and the interpreter",
    "builtins": "reaches __import__, eval and open",
    "importlib": "imports modules by computed name",
    "ctypes": "reaches raw memory and any syscall",
    "cffi": "reaches raw memory and any syscall",
    "subprocess": "runs other programs",
    "pty": "spawns terminals",
    "socket": "opens network sockets",
    "urllib": "makes network requests",
    "http": "makes network requests",
    "requests": "makes network requests",
    "ftplib": "makes network requests",
    "smtplib": "sends mail",
    "pickle": "unpickling runs code",
    "marshal": "loads code objects",
    "shutil": "copies and deletes trees",
    "pathlib": "opens any path",
    "io": "opens any path",
    "inspect": "reaches frames and globals",
    "types": "builds functions from code objects",
    "multiprocessing": "starts processes",
    "threading": "starts threads",
    "signal": "handles signals",
    "mmap": "maps memory and files",
    "resource": "changes resource limits",
}
"""Why a well-known module is not on the default list (the finding says so)."""

OS_CALLS: Mapping[str, str] = {
    "system": "runs a shell command",
    "popen": "runs a shell command",
    "fork": "forks a process",
    "forkpty": "forks a terminal",
    "kill": "signals a process",
    "killpg": "signals a process group",
    "setuid": "changes identity",
    "chroot": "changes the root directory",
    "mknod": "creates device nodes",
}
OS_PREFIXES = (("exec", "replaces the process"), ("spawn", "spawns"))
_DUNDER = re.compile(r"__[A-Za-z0-9_]+?__")


@dataclass(frozen=True, slots=True)
class Allowances:
    """What the rules let through: the policy's allow-lists."""

    imports: frozenset[str] = DEFAULT_IMPORTS
    dunders: frozenset[str] = DEFAULT_DUNDERS
    open: OpenMode = "workspace"
    workspace: str = "/workspace"

    def module_allowed(self, name: str) -> bool:
        """``name`` or a package above it is on the list (``collections`` allows
        ``collections.abc``; ``os.path`` allows ``os.path`` but not ``os``)."""
        parts = name.split(".")
        return any(".".join(parts[:i]) in self.imports for i in range(1, len(parts) + 1))


def finding(rule: str, line: int, message: str, risk: Risk, *, blocked: bool = False) -> Finding:
    """What the gate noticed at ``line``, as governance's ``Finding``: the rule is its code, the
    severity its risk, and a blocking finding asks for ``BLOCK`` (a warning for ``ALLOW``)."""
    verdict = Verdict.BLOCK if blocked else Verdict.ALLOW
    return Finding(CHECK, rule, verdict, message, {"line": line}, risk=risk)


@functools.lru_cache(maxsize=512)
def _resolve(module: str) -> types.ModuleType | None:
    """The host's copy of an allowed module, to see what its attributes are. Only modules on the
    policy's allow-list get here (the operator trusts them); one that does not import here
    (a package the host lacks) is not resolved and only the private-name rule applies."""
    try:
        return importlib.import_module(module)
    except Exception:  # any failure only means "cannot resolve"
        return None


class Rules(ast.NodeVisitor):
    """One pass over a module's AST; ``found`` holds every finding."""

    def __init__(self, allow: Allowances) -> None:
        self.allow = allow
        self.found: list[Finding] = []
        self.modules: dict[str, str] = {}
        """Names bound to modules -> the dotted module they stand for."""
        self.bound: set[str] = set()
        """Every name the code binds (so ``sys`` used but never imported is noticed)."""

    def visit_Module(self, node: ast.Module) -> None:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and not isinstance(sub.ctx, ast.Load):
                self.bound.add(sub.id)
            elif isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                self.bound.add(sub.name)
            elif isinstance(sub, ast.arg):
                self.bound.add(sub.arg)
            elif isinstance(sub, ast.alias):
                self.bound.add((sub.asname or sub.name).split(".")[0])
        self.generic_visit(node)

    def add(self, rule: str, node: ast.AST, message: str) -> None:
        self.found.append(finding(rule, getattr(node, "lineno", 0), message, Risk.HIGH))

    # -- imports ------------------------------------------------------------------------------

    def _import_allowed(self, name: str, node: ast.AST) -> bool:
        if self.allow.module_allowed(name):
            return True
        why = WHY_NOT.get(name.split(".")[0])
        self.add(
            "AUT001",
            node,
            f"imports {name}: not on the import allow-list" + (f" ({why})" if why else ""),
        )
        return False

    def visit_Import(self, node: ast.Import) -> None:
        # A refused module is still tracked, so its uses are reported too (``os.system``).
        for alias in node.names:
            if alias.asname:
                self._import_allowed(alias.name, node)
                self.modules[alias.asname] = alias.name
            else:
                # ``import a.b`` binds ``a``: the top package must be allowed itself.
                top = alias.name.split(".")[0]
                if self._import_allowed(alias.name, node) and top != alias.name:
                    self._import_allowed(top, node)
                self.modules[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.add("AUT001", node, "a relative import: the sandbox runs one file")
            return
        module = node.module or ""
        if not self._import_allowed(module, node):
            if module == "os":
                for alias in node.names:
                    self._os_call(alias.name, node)
            return
        for alias in node.names:
            if alias.name == "*":
                self.add("AUT001", node, f"from {module} import *: binds names the gate cannot see")
                continue
            if module == "os":
                self._os_call(alias.name, node)
            target = self._member(module, alias.name, node)
            if target is not None:
                self.modules[alias.asname or alias.name] = target

    def _member(self, module: str, name: str, node: ast.AST) -> str | None:
        """Check ``module.name``; the dotted module it is, if it is a module (else ``None``)."""
        self._attribute_name(name, node)
        if name.startswith("_") and not _is_dunder(name):
            self.add("AUT008", node, f"{module}.{name} is private to the module")
            return None
        parent = _resolve(module) if self.allow.module_allowed(module) else None
        value = getattr(parent, name, None) if parent is not None else None
        if isinstance(value, types.ModuleType):
            dotted = f"{module}.{name}"
            # By the module's own name: ``typing.sys`` is ``sys``, not a part of ``typing``.
            if not (dotted in self.allow.imports or self.allow.module_allowed(value.__name__)):
                self.add(
                    "AUT008",
                    node,
                    f"{dotted} is the module {value.__name__}, which is not on the import "
                    "allow-list",
                )
                return None
            return dotted
        return None

    def _os_call(self, name: str, node: ast.AST) -> None:
        why = OS_CALLS.get(name)
        for prefix, reason in OS_PREFIXES:
            if why is None and name.startswith(prefix):
                why = reason
        if why is not None:
            self.add("AUT002", node, f"os.{name} {why}")

    # -- names and attributes -----------------------------------------------------------------

    def _attribute_name(self, name: str, node: ast.AST) -> None:
        if _is_dunder(name) and name not in self.allow.dunders:
            self.add("AUT004", node, f"reaches {name}, a sandbox-escape gadget")
        elif name in GADGET_ATTRIBUTES:
            self.add("AUT004", node, f"reaches .{name}, which leads to frames, code or globals")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain = _chain(node)
        if chain is not None and chain[0] in self.modules:
            module = self.modules[chain[0]]
            if module == "os":
                self._os_call(chain[1], node)
            for i, name in enumerate(chain[1:], start=2):
                target = self._member(module, name, node)
                if target is None:
                    # Not a module: what follows are attributes of an ordinary object.
                    for rest in chain[i:]:
                        self._attribute_name(rest, node)
                    break
                module = target
            return
        self._attribute_name(node.attr, node)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load):
            return
        name = node.id
        if name in self.modules:
            self.add(
                "AUT007",
                node,
                f"the module {self.modules[name]} used as a value: use it only as {name}.attribute",
            )
        elif name in DYNAMIC_CODE:
            self.add("AUT003", node, f"{name} runs or imports code from a string")
        elif name in INTROSPECTION:
            self.add("AUT006", node, f"{name}() reaches a namespace (builtins, globals, a module)")
        elif name in ATTRIBUTE_FUNCTIONS:
            self.add("AUT003", node, f"{name} used as a value: call it with a literal name")
        elif name == "open":
            if self.allow.open != "any":
                self.add("AUT005", node, "open used as a value: call it with a literal path")
        elif _is_dunder(name) and name not in self.allow.dunders:
            self.add("AUT004", node, f"reaches {name}, a sandbox-escape gadget")
        elif name in WHY_NOT and name not in self.bound:
            self.add(
                "AUT001",
                node,
                f"uses the module {name} without importing it (not on the import allow-list)",
            )

    def _text(self, text: str, node: ast.AST) -> bool:
        if "__" in text:
            for name in _DUNDER.findall(text):
                if name not in self.allow.dunders:
                    self.add("AUT004", node, f"a string naming {name}, a sandbox-escape gadget")
                    return True
        return False

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self._text(node.value, node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        # "__imp" + "ort__": the pieces are harmless, the literal they make is not.
        text = _literal_text(node)
        if not (text is not None and self._text(text, node)):
            self.generic_visit(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        text = _literal_text(node)
        if not (text is not None and self._text(text, node)):
            self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in ATTRIBUTE_FUNCTIONS:
            name = node.args[1] if len(node.args) >= 2 else None
            if name is None or not _literal_text(name):
                self.add("AUT003", node, f"{func.id}() with a computed attribute name")
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                self.visit(arg)
            if name is not None:
                text = _literal_text(name)
                if text:
                    self._attribute_name(text, node)
            return
        if isinstance(func, ast.Name) and func.id == "open":
            self._open(node)
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                self.visit(arg)
            return
        walker = func.attr if isinstance(func, ast.Attribute) else None
        if walker in NAME_WALKERS:
            for arg in node.args[:1] if walker == "methodcaller" else node.args:
                text = _literal_text(arg)
                if text is None:
                    self.add("AUT003", node, f"{walker}() with a computed attribute name")
                else:
                    for part in text.split("."):
                        self._attribute_name(part, node)
        self.generic_visit(node)

    def _open(self, node: ast.Call) -> None:
        mode = self.allow.open
        if mode == "any":
            return
        if mode == "none":
            self.add("AUT005", node, "open() is not allowed by the policy (open: none)")
            return
        path = (
            node.args[0]
            if node.args
            else next((k.value for k in node.keywords if k.arg == "file"), None)
        )
        text = _literal_text(path) if path is not None else None
        if text is None:
            self.add(
                "AUT005",
                node,
                "open() of a computed path: only literal paths inside the work dir are allowed",
            )
            return
        workspace = self.allow.workspace.rstrip("/")
        parts = text.split("/")
        if text.startswith("/") and not (text == workspace or text.startswith(workspace + "/")):
            self.add("AUT005", node, f"opens a path outside the work dir: {text}")
        elif ".." in parts:
            self.add("AUT005", node, f"opens a path that climbs out of the work dir: {text}")


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _chain(node: ast.expr) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]``; ``None`` when the root is not a plain name."""
    names: list[str] = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    names.append(node.id)
    return names[::-1]


def _literal_text(node: ast.expr) -> str | None:
    """The value of a string made only of literals (a constant, an f-string or ``+`` of
    constants without placeholders); ``None`` when any part is computed at run time."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            return node.value
        if isinstance(node.value, bytes):
            return node.value.decode("latin-1")
        return None
    if isinstance(node, ast.JoinedStr):
        parts = [_literal_text(v) for v in node.values]
        return None if any(p is None for p in parts) else "".join(p or "" for p in parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal_text(node.left), _literal_text(node.right)
        return None if left is None or right is None else left + right
    return None


def ast_findings(code: str, allow: Allowances | None = None) -> list[Finding]:
    """The rules' findings; code that does not parse is left to the sandbox to report."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", 0) or 0
        return [finding("AUT000", line, f"does not parse: {exc.__class__.__name__}", Risk.LOW)]
    rules = Rules(allow or Allowances())
    rules.visit(tree)
    return rules.found

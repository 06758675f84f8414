"""The architecture in figures: floors, imports that run back up, import circles, complexity, entry sizes.

    .venv/bin/python tests/bench/bench_architecture.py [--json]

Reads ``distillkit/`` with ``ast`` (every import counts, module-level or inside a function: a late
import is still a dependency). Each module sits on a floor (``FLOORS``, the picture in
docs/ARCHITECTURE.md): the ground floor (infrastructure with no domain knowledge), shared services,
the three task families side by side, and the commands on top. Reported:

- imports that run back up (a module importing one on a higher floor) and across families;
- import circles: strongly connected groups of modules (Tarjan), with their members;
- functions above a McCabe complexity of 20 (ruff's C901, the ten most complex listed);
- line counts of the three training entry points;
- the number of duplicated-code pairs ``duplicates`` finds over ``distillkit/`` (when it is on PATH).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "distillkit"

GROUND, SERVICES, FAMILIES, COMMANDS = 0, 1, 2, 3
FLOOR_NAMES = {GROUND: "ground", SERVICES: "services", FAMILIES: "families", COMMANDS: "commands"}
# first component under distillkit/ -> floor; top-level modules not listed are ground floor
FLOORS = {
    "data": SERVICES,
    "config": SERVICES,
    "augmentation": SERVICES,
    "training": SERVICES,
    "evaluation": SERVICES,
    "export": SERVICES,
    "inference": SERVICES,
    "labelling": SERVICES,
    "experiment": SERVICES,
    "teachers": FAMILIES,
    "students": FAMILIES,
    "classify": FAMILIES,
    "report": COMMANDS,
    "checks": COMMANDS,
    "cli": COMMANDS,
    "__main__": COMMANDS,
}
FAMILY_PACKAGES = {"teachers", "students", "classify"}
# each training command's library entry, and its family's run class on the experiment-run base
ENTRY_POINTS = {
    "train_student": "students/train.py",
    "StudentRun": "students/train.py",
    "train_classifier": "classify/train.py",
    "ClassifierRun": "classify/train.py",
    "train_teachers": "teachers/pipeline.py",
    "TeacherRun": "teachers/pipeline.py",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def floor(module: str) -> int:
    return FLOORS.get(area(module), GROUND)


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            # the longest known module the import names (``from x import y``: y may be a module or a name)
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("distillkit") and target != module:
                found.add(target)
    if is_package:  # a package's own submodules are not dependencies of it in the layering sense
        found = {target for target in found if not target.startswith(module + ".")}
    return found


def graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    known = set(paths)
    return {module: imports_of(path, module, known) for module, path in paths.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in edges:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def complexity() -> list[tuple[int, str]]:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    command = [ruff, "check", str(PACKAGE), "--select", "C901", "--output-format", "concise", "--no-cache"]
    command += ["--config", "lint.mccabe.max-complexity = 10"]  # all above 10, so the ten most complex show
    output = subprocess.run(command, capture_output=True, text=True, cwd=REPO).stdout
    found = []
    for line in output.splitlines():
        match = re.search(r"^(.*?):(\d+):\d+: C901 `(.+?)` is too complex \((\d+) > 10\)", line)
        if match:
            file, _, name, score = match.groups()
            found.append((int(score), f"{Path(file).resolve().relative_to(REPO)}:{name}"))
    return sorted(found, reverse=True)


def _span(node: ast.AST) -> int:
    return (getattr(node, "end_lineno", None) or node.lineno) - node.lineno + 1  # type: ignore[attr-defined]


def entry_lines() -> dict[str, int | None]:
    """Lines of each entry function; for a run class, its ``train`` method and its longest method."""
    sizes: dict[str, int | None] = {}
    for name, relative in ENTRY_POINTS.items():
        path = PACKAGE / relative
        if not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == name:
                sizes[name] = _span(node)
            if isinstance(node, ast.ClassDef) and node.name == name:
                methods = [item for item in node.body if isinstance(item, ast.FunctionDef)]
                train = next((m for m in methods if m.name == "train"), None)
                longest = max(methods, key=_span)
                sizes[f"{name}.train"] = _span(train) if train else None
                sizes[f"{name}.{longest.name} (longest method)"] = _span(longest)
    return sizes


def duplicate_pairs() -> int | None:
    tool = shutil.which("duplicates")
    if tool is None:
        return None
    output = subprocess.run([tool], capture_output=True, text=True, cwd=PACKAGE).stdout
    match = re.match(r"(\d+) pairs of places", output)
    return int(match.group(1)) if match else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    edges = graph()
    upward = sorted(
        (source, target) for source, targets in edges.items() for target in targets if floor(target) > floor(source)
    )
    across = sorted(
        (source, target)
        for source, targets in edges.items()
        for target in targets
        if area(source) in FAMILY_PACKAGES and area(target) in FAMILY_PACKAGES and area(source) != area(target)
    )
    groups = circles(edges)
    complex_functions = complexity()
    lines = sum(len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py"))
    per_floor: dict[str, int] = defaultdict(int)
    for module in edges:
        per_floor[FLOOR_NAMES[floor(module)]] += 1
    result = {
        "modules": len(edges),
        "lines": lines,
        "modules_per_floor": dict(per_floor),
        "upward_imports": [f"{s} -> {t}" for s, t in upward],
        "family_to_family_imports": [f"{s} -> {t}" for s, t in across],
        "circles": groups,
        "functions_over_complexity_20": sum(score > 20 for score, _ in complex_functions),
        "most_complex": [f"{score} {name}" for score, name in complex_functions[:10]],
        "entry_point_lines": entry_lines(),
        "duplicate_pairs": duplicate_pairs(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['modules']} modules, {lines} lines; per floor: {dict(per_floor)}")
    print(f"imports running back up: {len(upward)}")
    for source, target in upward:
        print(f"  {source} ({FLOOR_NAMES[floor(source)]}) -> {target} ({FLOOR_NAMES[floor(target)]})")
    print(f"imports between families: {len(across)}")
    for source, target in across:
        print(f"  {source} -> {target}")
    print(f"import circles: {len(groups)}")
    for group in groups:
        print(f"  {' <-> '.join(group)}")
    over = sum(score > 20 for score, _ in complex_functions)
    print(f"functions above complexity 20: {over}; the ten most complex:")
    for score, name in complex_functions[:10]:
        print(f"  {score:3d} {name}")
    print(f"training entry points (lines): {result['entry_point_lines']}")
    print(f"duplicated-code pairs (duplicates over distillkit/): {result['duplicate_pairs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

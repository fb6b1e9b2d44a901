"""The layout rules docs/architecture.md states, held against the code's imports: stages do not import each other,
the adapters (ledger, database, storage) import no stage, no module imports in a circle, and sizes stay bounded."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "shared_code"
STAGES = {"archive", "drop", "verify", "restore", "reporting"}
ADAPTERS = {"ledger", "database", "storage"}
ENTRY = {"engine", "service", "api", "cli", "cli_archive", "cli_common", "runtime"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute module imported, whether at module level outside TYPE_CHECKING) for each shared_code import."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    checking = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                for n in ast.walk(node)}
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            names = [f"{target}.{a.name}" for a in node.names] if not node.module else [target]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("shared_code"):
            names = [node.module]
        else:
            continue
        for name in names:
            found.append((name, id(node) in top and id(node) not in checking))
    return found


def _files() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def _group(module: str) -> str:
    """The top-level part of shared_code a module belongs to: a package name or a module name."""
    return module.split(".")[1] if module.count(".") >= 1 else module


def test_stages_do_not_import_each_other_and_adapters_import_no_stage():
    wrong = []
    for path in _files():
        mine = _group(_module(path))
        for target, _ in _imports(path):
            theirs = _group(target)
            if mine in STAGES and theirs in STAGES and theirs != mine:
                wrong.append(f"stage {_module(path)} imports stage {target}")
            if mine in ADAPTERS and (theirs in STAGES or theirs in ENTRY):
                wrong.append(f"adapter {_module(path)} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_import_circles_between_modules():
    known = {_module(p) for p in _files()}
    graph: dict[str, set[str]] = {m: set() for m in known}
    for path in _files():
        for target, at_load in _imports(path):
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if at_load and target in known and target != _module(path) and not _module(path).startswith(target + "."):
                graph[_module(path)].add(target)
    # a package's __init__ that re-exports its own modules is not a circle
    for module in graph:
        graph[module] = {t for t in graph[module] if not t.startswith(module + ".")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


def test_no_module_over_450_lines_and_no_class_over_300():
    too_big = []
    for path in _files():
        text = path.read_text()
        if text.count("\n") > 450:
            too_big.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 300:
                too_big.append(f"{path.relative_to(ROOT)}: class {node.name} {node.end_lineno - node.lineno + 1} lines")
    assert not too_big, "\n".join(too_big)

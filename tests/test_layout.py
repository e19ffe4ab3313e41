"""The tree reads as the data flow: packages by stage, imports pointing one way, short functions.

core ← io ← data ← models ← tasks ← training, inference ← the CLIs and the config loader. A
module imports its own package and the layers below it; inference never imports training.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "competition"
LAYERS = {"core": 0, "io": 1, "data": 2, "models": 3, "tasks": 4, "training": 5, "inference": 5}
EDGE = 6  # competition.config and the CLIs (train, predict, board, …), which never import each other


def _modules() -> dict[str, Path]:
    return {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in PACKAGE.rglob("*.py") if "configs" not in p.parts
    }


def _imports(path: Path) -> set[str]:
    """Every competition module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("competition"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("competition"))
    return found & set(_modules())


def _layer(module: str) -> tuple[int, str]:
    parts = module.split(".")
    if module == "competition":
        return -1, "competition"  # the version string, importable everywhere
    part = parts[1]
    return LAYERS.get(part, EDGE), part


def test_every_import_points_down_the_flow():
    wrong = []
    for module, path in _modules().items():
        rank, package = _layer(module)
        for target in _imports(path):
            t_rank, t_package = _layer(target)
            if t_package != package and t_rank >= rank and not (rank == EDGE and t_rank <= EDGE):
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_inference_never_imports_training():
    offenders = [m for m, p in _modules().items() if m.startswith("competition.inference")
                 and any(t.startswith("competition.training") for t in _imports(p))]
    assert offenders == []


def test_the_import_graph_has_no_cycle():
    graph = {m: _imports(p) - {m} for m, p in _modules().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path + [m, n]
            if n not in state and (cycle := visit(n, path + [m])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            assert visit(m, []) is None


def test_no_function_over_60_lines_and_no_module_over_350():
    long = []
    for module, path in _modules().items():
        text = path.read_text()
        if len(text.splitlines()) > 350:
            long.append(f"{module} ({len(text.splitlines())} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{module}.{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []


def _commands() -> set[str]:
    """The CLIs: the package's top-level modules with a main() (train, predict, board, …)."""
    return {m for m, p in _modules().items() if m.count(".") == 1 and "\ndef main(" in p.read_text()}


def test_no_command_imports_another():
    """What two commands share lives in a layer below them, so running one never loads another."""
    commands = _commands()
    assert {"competition.train", "competition.predict", "competition.board", "competition.package"} <= commands
    wrong = [f"{m} imports {t}" for m in sorted(commands) for t in sorted(_imports(_modules()[m])) if t in commands - {m}]
    assert wrong == []


def test_every_module_name_exists_once():
    """One name, one module: `folds` is the command and `data.splits` the fold assignment, not two `folds`."""
    names: dict[str, list[str]] = {}
    for module in _modules():
        if not module.endswith("__main__") and module != "competition":
            names.setdefault(module.rsplit(".", 1)[-1], []).append(module)
    assert {k: v for k, v in names.items() if len(v) > 1 and k != "__init__"} == {}
    assert "competition" not in {m.split(".")[-1] for m in _modules() if m != "competition"}


def test_the_tests_import_their_shared_helpers_one_way():
    """`from conftest import …`: pytest has imported tests/conftest.py as `conftest`, and
    `tests.conftest` would load a second copy of it beside the one whose fixtures run."""
    wrong = [f"{p.name} imports {node.module}" for p in sorted(Path(__file__).parent.glob("test_*.py"))
             for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tests"]
    assert wrong == []

"""The tree reads as the data flow: packages by stage, imports pointing one way, short functions.

core ← io ← data ← models ← tasks ← training, inference ← experiments (board, blends), search (auto),
the CLIs and the config loader. A module imports its own package and the layers below it; inference
never imports training.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "competition"
EDGE = 6  # competition.config and the CLIs (train, predict, board, …), which never import each other
# experiments and search sit at the edge with the commands they serve: search runs the commands
# (through importlib, never an import) and blends through experiments; nothing below imports either.
LAYERS = {"core": 0, "io": 1, "data": 2, "models": 3, "tasks": 4, "training": 5, "inference": 5,
          "experiments": EDGE, "search": EDGE}


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


# Where the task kind and the model family may be asked about: the tasks, which implement each kind
# and pick a family's task (tasks.task_of); the registry of the models fit once per fold; and the
# board, which reads runs' stored configs without loading torch, so has no task to ask.
TASK_HOMES = ("competition.tasks",)
FAMILY_HOMES = ("competition.tasks", "competition.models.tables", "competition.experiments.standings")
FAMILY_LOOKUPS = {"one_fit_family", "family_named"}  # models.tables: the family of a config, of a name


def _model_classes() -> dict[str, str]:
    """The model classes the kit defines (nn.Module subclasses under competition/models), and the
    module of each: the one place an isinstance of it may stand (its family's own code)."""
    return {node.name: module for module, path in _modules().items() if module.startswith("competition.models.")
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ClassDef) and any(ast.unparse(b) in ("nn.Module", "Module") for b in node.bases)}


def _is_task_kind(node: ast.AST) -> bool:
    """`cfg.task`, `config["task"]`, `config.get("task")`: a config's task kind."""
    if isinstance(node, ast.Attribute):
        return node.attr == "task"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "task"
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
            and bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value == "task")


def _is_name_literal(node: ast.AST) -> bool:
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return bool(node.elts) and all(_is_name_literal(e) for e in node.elts)
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _called(node: ast.Call) -> str:
    return node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")


def task_branches(tree: ast.AST, model_classes: set[str], lookups: set[str]) -> list[str]:
    """Each line of `tree` that asks which task kind or model family it runs: a task kind compared
    with a name (`cfg.task == "image"`, `match cfg.task`), an isinstance of one of `model_classes`,
    a call of one of `lookups` (the family of a config)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            hit = any(_is_task_kind(o) for o in operands) and any(_is_name_literal(o) for o in operands)
        elif isinstance(node, ast.Match):
            hit = _is_task_kind(node.subject)
        elif isinstance(node, ast.Call) and _called(node) == "isinstance" and len(node.args) == 2:
            classes = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
            hit = any(ast.unparse(c).split(".")[-1] in model_classes for c in classes)
        else:
            hit = isinstance(node, ast.Call) and _called(node) in lookups
        if hit:
            found.append((node.lineno, f"line {node.lineno}: {ast.unparse(node)[:80]}"))
    return [line for _, line in sorted(found)]


def test_task_and_model_family_branches_live_in_the_tasks():
    """The kit asks the config's task (train's fold trainer, package's refusal, the report's pictures,
    the check of a fit) instead of branching on `cfg.task` or on the model family: a new task kind or
    family is a new Task or registry line, not an edit of each module that would branch on it."""
    classes = _model_classes()
    assert {"TabularMLP", "EstimatorModule", "GBDTModule"} <= set(classes)
    wrong = []
    for module, path in sorted(_modules().items()):
        if module.startswith(TASK_HOMES):
            continue
        lookups = set() if module.startswith(FAMILY_HOMES) else FAMILY_LOOKUPS
        others = {name for name, home in classes.items() if home != module}
        found = task_branches(ast.parse(path.read_text()), others, lookups)
        wrong += [f"{module} {line}" for line in found]
    assert wrong == []
    # the checker sees each kind of branch it is there to refuse, and lets comparisons and registries be
    code = ('if cfg.task == "image": pass\nif state.config.get("task") in ("tabular",): pass\n'
            'match cfg.task:\n    case "image": pass\nfamily = one_fit_family(cfg)\nisinstance(m, TabularMLP)\n'
            'if saved.get("task") != cfg.task: pass\nfit = TASKS[cfg.task]\n')
    assert [line.split(":")[0] for line in task_branches(ast.parse(code), set(classes), FAMILY_LOOKUPS)] == [
        "line 1", "line 2", "line 3", "line 5", "line 6"]

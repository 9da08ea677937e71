"""The house rules of `src/digitlab`, in numbers (issue 18, ../shared/DESIGN.md).

Read with `ast` only, so the package is never imported and every rule is checked on every
file, whatever it would import:

- dependencies point down a fixed ladder of layers, and no modules form a loop, counting the
  imports made inside functions (they run too, only later);
- no source file over 500 lines, no CLI module over 350;
- at most 3 functions over 60 lines;
- the dataset's shape, scale, class count and names are typed only in the data and model
  constants.

Each assertion names what breaks the rule and where, so the message is the to-do list.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "digitlab"

# Lowest first: a module may import modules of its own layer or of any layer below it, never
# above. A pattern is a module name, or "name.*" for a package and every module in it; the most
# specific pattern wins (an exact name over "a.b.*" over "a.*"), so a package can keep one
# module lower than the rest. A module no pattern matches fails `test_every_module_has_a_layer`.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundations: errors, files, signals",
        (
            "digitlab._version",
            "digitlab.errors",
            "digitlab.files",
            "digitlab.interrupts",
            "digitlab.ports",
            "digitlab.signals",
            "digitlab.parent_death",
        ),
    ),
    (
        "data and specs",
        (
            "digitlab.data",
            "digitlab.data.*",
            "digitlab.choices",  # the one lists schema.py builds its choices from
            "digitlab.validation",  # schema's checking and its one-line messages
            "digitlab.schema",
            "digitlab.config",
            "digitlab.presets",
        ),
    ),
    (
        # what a run is made of and drawn with; runs/ loads models and shows itself with these
        "building blocks",
        (
            "digitlab.forward",  # a saved model's forward pass in NumPy, no Keras
            "digitlab.network",  # a spec's layer table without Keras (summary)
            "digitlab.corruptions",  # MNIST-C's corruptions of a batch of digits
            "digitlab.background",  # issue 22: a frame's background levelled to black
            "digitlab.model",
            "digitlab.augment",
            "digitlab.fastfit",
            "digitlab.events",  # a training callback writing TensorBoard files
            "digitlab.plots",
            "digitlab.display",
            "digitlab.html",  # the Jinja2 environment display.py shares with reports
        ),
    ),
    (
        # the owners of the files results are stored in: a run folder, an experiment's record
        "stored results",
        (
            "digitlab.runs",
            "digitlab.runs.*",
            "digitlab.experiments",  # its __init__ only re-exports lazily: records stay cheap
            "digitlab.experiments.schema",
            "digitlab.experiments.record",
            "digitlab.experiments.conclusions",
            "digitlab.experiments.statistics",
        ),
    ),
    (
        "reading a run",
        (
            "digitlab.evaluation",
            "digitlab.prediction",
            "digitlab.preprocess",
            "digitlab.confidence",
            "digitlab.insight.*",  # probe, inspection, explanation
            "digitlab.ood",
            "digitlab.conformal",  # issue 22: 95% prediction sets
            "digitlab.outliers",  # issue 22: what "not a digit" is learned from
            "digitlab.verifiers",  # the verifier, trained once per set of digits, cached
            "digitlab.companion",  # a robust second network beside the verifiers, cached
            "digitlab.mechanisms",  # issue 21: noise scale, Hessian, conditioning, saturation
            "digitlab.mechanisms.*",
            "digitlab.robustness",  # a run under MNIST-C's corruptions
            "digitlab.report.*",  # training writes a run's report.html
            "digitlab.experiments.plots",  # and its figures_* modules
            "digitlab.experiments.figures_common",
            "digitlab.experiments.figures_forest",
            "digitlab.experiments.figures_mechanisms",
            "digitlab.experiments.figures_summary",
        ),
    ),
    (
        "training",
        ("digitlab.training", "digitlab.training.*", "digitlab.exposure"),  # outlier exposure
    ),
    (
        "orchestration: experiments, tuning",
        (
            "digitlab.experiments.*",
            "digitlab.tune",
            "digitlab.tune.*",
            "digitlab.search_space",
            "digitlab.board",
        ),
    ),
    (
        # the package __init__ re-exports lazily, but its experiment() imports experiments/
        "front doors: the CLI, the HTTP API, the package",
        (
            "digitlab",
            "digitlab.__main__",
            "digitlab.cli",
            "digitlab.cli.*",
            "digitlab.api",
            "digitlab.api.*",
            "digitlab.serve",
        ),
    ),
]

MAX_FILE_LINES = 500
MAX_CLI_MODULE_LINES = 350
LONG_FUNCTION_LINES = 60
MAX_LONG_FUNCTIONS = 3

# Where the dataset's shape, scale, class count and names are defined (data.py: the dataset
# registry, IMAGE_SHAPE, PIXELS, PIXEL_MAX, NUM_CLASSES, DEFAULT_DATASET; model.py:
# PIXEL_SCALE), and schema.py, whose `dataset` field lists the registry's names.
CONSTANT_HOMES = ("digitlab.data", "digitlab.data.*", "digitlab.model")
DATASET_NAME_HOMES = (*CONSTANT_HOMES, "digitlab.schema")

# 255 that is not the dataset's pixel scale: (module, function) -> why.
ALLOWED_255: dict[tuple[str, str], str] = {
    ("digitlab.insight.explanation", "saliency_rgba"): "the alpha of an RGBA heat-map overlay",
    ("digitlab.preprocess", "_flatten_transparency"): "alpha and paper of an RGBA upload",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    """Every module of the package by dotted name (static files and templates hold no .py)."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


MODULES = source_files()
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def _resolve(name: str) -> str | None:
    """The module an import of `name` loads: itself, or the nearest package above it."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in MODULES else None


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:`: they never run."""
    skipped = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(test):
            skipped |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return skipped


def imports(name: str) -> Iterator[tuple[str, int]]:
    """(module imported, line) for each digitlab import in module `name`, inside functions too.

    `from digitlab import x` is an import of the submodule `digitlab.x` when there is one, else
    of `digitlab/__init__` (as `from digitlab import __version__`). A package's lazy re-export
    table (`_EXPORTS` and `__getattr__`) holds strings, not imports, and is not counted.
    """
    tree = TREES[name]
    skipped = _type_checking_only(tree)
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            resolved = _resolve(target) if target.split(".")[0] == "digitlab" else None
            if resolved and resolved != name:
                yield resolved, node.lineno
                yield from ((parent, node.lineno) for parent in _parents_run(resolved, name))


def _parents_run(target: str, importer: str) -> Iterator[str]:
    """The packages whose `__init__` importing `target` runs too: `import digitlab.report.x`
    runs `digitlab/report/__init__.py`, so it depends on all that file imports. The top
    package and the importer's own packages (already running) are left out."""
    parts = target.split(".")
    for depth in range(2, len(parts)):
        parent = ".".join(parts[:depth])
        if parent in MODULES and not (importer + ".").startswith(parent + "."):
            yield parent


GRAPH: dict[str, dict[str, int]] = {}
for _name in MODULES:
    GRAPH[_name] = {}
    for _target, _line in imports(_name):
        GRAPH[_name].setdefault(_target, _line)


def _matches(pattern: str, name: str) -> bool:
    if pattern.endswith(".*"):
        stem = pattern[:-2]
        return name == stem or name.startswith(stem + ".")
    return name == pattern


def _specificity(pattern: str) -> tuple[int, int]:
    return (0, len(pattern)) if pattern.endswith(".*") else (1, len(pattern))


def matching(name: str, patterns: tuple[str, ...]) -> str | None:
    found = [pattern for pattern in patterns if _matches(pattern, name)]
    return max(found, key=_specificity) if found else None


def layer_of(name: str) -> int | None:
    """The index in LAYERS of the most specific pattern that matches `name`."""
    best: tuple[tuple[int, int], int] | None = None
    for index, (_, patterns) in enumerate(LAYERS):
        pattern = matching(name, patterns)
        if pattern and (best is None or _specificity(pattern) > best[0]):
            best = (_specificity(pattern), index)
    return best[1] if best else None


def loop_groups() -> list[list[str]]:
    """Each group of modules that reach one another through imports (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(GRAPH[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return groups


def _loop_through(group: list[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(GRAPH[node]):
                if target == start:
                    return [*paths[node], start]
                if target in members and target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no loop through {group}")


def _describe(loop: list[str]) -> str:
    steps = [f"{a} -> {b} (line {GRAPH[a][b]})" for a, b in itertools.pairwise(loop)]
    return "\n    ".join(steps)


def test_the_graph_sees_imports_inside_functions_and_from_the_package():
    # the package's experiment() imports experiments/ inside a function
    assert "digitlab.experiments" in GRAPH["digitlab"]
    # `from digitlab import plots` is an import of the submodule, not of the package
    assert "digitlab.plots" in GRAPH["digitlab.evaluation"]
    assert "digitlab" not in GRAPH["digitlab.evaluation"]


def test_no_loop_among_modules():
    groups = loop_groups()
    found = []
    for group in groups:
        loop = _loop_through(group)
        found.append(
            f"  {len(group)} modules in one loop: {', '.join(group)}\n"
            f"  for example {' -> '.join(loop)}:\n    {_describe(loop)}"
        )
    assert not found, f"{len(found)} import loop(s), counting imports inside functions:\n" + (
        "\n".join(found)
    )


def test_every_module_has_a_layer():
    missing = [name for name in MODULES if layer_of(name) is None]
    assert not missing, f"add these modules to LAYERS in {Path(__file__).name}: {missing}"


def test_no_import_runs_up_a_layer():
    upward = []
    for name, targets in sorted(GRAPH.items()):
        here = layer_of(name)
        for target, line in sorted(targets.items()):
            there = layer_of(target)
            if here is not None and there is not None and there > here:
                upward.append(
                    f"  {name} -> {target} (line {line}): "
                    f"{LAYERS[here][0]!r} imports {LAYERS[there][0]!r}"
                )
    assert not upward, f"{len(upward)} import(s) run back up a layer:\n" + "\n".join(upward)


def test_no_long_source_files():
    too_long = []
    for name, path in MODULES.items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        cli = _matches("digitlab.cli.*", name)
        limit = MAX_CLI_MODULE_LINES if cli else MAX_FILE_LINES
        if lines > limit:
            too_long.append(f"  {path.relative_to(SRC)}: {lines} lines (at most {limit})")
    assert not too_long, "source files over the limit:\n" + "\n".join(too_long)


def long_functions() -> list[str]:
    found = []
    for name, tree in TREES.items():
        for qualname, node in _functions(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > LONG_FUNCTION_LINES:
                    found.append(f"  {name}:{qualname} (line {node.lineno}): {length} lines")
    return found


def test_at_most_three_long_functions():
    found = long_functions()
    assert len(found) <= MAX_LONG_FUNCTIONS, (
        f"{len(found)} functions over {LONG_FUNCTION_LINES} lines "
        f"(at most {MAX_LONG_FUNCTIONS}):\n" + "\n".join(found)
    )


# --- one literal, one place ------------------------------------------------------------------


def _dataset_names() -> set[str]:
    """The keys of the DATASETS registry in digitlab.data (or a module of it), read from source."""
    data_modules = [tree for name, tree in TREES.items() if _matches("digitlab.data.*", name)]
    for node in (node for tree in data_modules for node in ast.walk(tree)):
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(node, ast.Assign | ast.AnnAssign) and getattr(target, "id", "") == "DATASETS":
            return {key.value for key in node.value.keys if isinstance(key, ast.Constant)}
    raise AssertionError("digitlab.data has no DATASETS registry")


def _is(node: ast.AST, value: int) -> bool:
    return (
        isinstance(node, ast.Constant)
        and not isinstance(node.value, bool)
        and isinstance(node.value, int | float)
        and node.value == value
    )


def _functions(tree: ast.AST, outer: str = "") -> Iterator[tuple[str, ast.AST]]:
    """(qualified name of the innermost enclosing function or "", node) for every node."""
    for child in ast.iter_child_nodes(tree):
        inner = outer
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            inner = f"{outer}.{child.name}" if outer else child.name
        yield inner, child
        yield from _functions(child, inner)


def _call_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


CLASS_COUNT_CALLS = {"Dense", "_dense", "to_categorical", "loss_targets", "eye", "range", "arange"}
CLASS_COUNT_NAMES = {"num_classes", "units", "minlength", "classes"}


def _literal_kind(node: ast.AST, parents: dict[int, ast.AST], names: set[str]) -> str | None:
    """What dataset constant `node` types out, or None."""
    parent = parents.get(id(node))
    if _is(node, 784):
        return "784 (PIXELS)"
    if _is(node, 255):
        return "255 (PIXEL_MAX / PIXEL_SCALE)"
    if isinstance(node, ast.Constant) and node.value in names:
        return f"{node.value!r} (DEFAULT_DATASET or the DATASETS registry)"
    if _is(node, 28) and (
        isinstance(parent, ast.Tuple | ast.List | ast.BinOp)
        or (isinstance(parent, ast.Call) and node in parent.args)
    ):
        return "28 (IMAGE_SHAPE)"
    if _is(node, 10):
        if isinstance(parent, ast.Call) and node in parent.args:
            return "10 (NUM_CLASSES)" if _call_name(parent) in CLASS_COUNT_CALLS else None
        if isinstance(parent, ast.keyword) and parent.arg in CLASS_COUNT_NAMES:
            return "10 (NUM_CLASSES)"
        if isinstance(parent, ast.arguments):
            arguments = [*parent.posonlyargs, *parent.args]
            defaults = dict(zip(reversed(parent.defaults), reversed(arguments), strict=False))
            kw = dict(zip(parent.kw_defaults, parent.kwonlyargs, strict=False))
            argument = defaults.get(node) or kw.get(node)
            if argument is not None and argument.arg in CLASS_COUNT_NAMES:
                return "10 (NUM_CLASSES)"
    return None


def dataset_literals() -> list[str]:
    names = _dataset_names()
    found = []
    for name, tree in sorted(TREES.items()):
        if matching(name, CONSTANT_HOMES):
            continue
        parents = {
            id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)
        }
        lines = MODULES[name].read_text(encoding="utf-8").splitlines()
        for function, node in _functions(tree):
            kind = _literal_kind(node, parents, names)
            if kind is None:
                continue
            if kind.startswith("255") and (name, function.split(".")[0]) in ALLOWED_255:
                continue
            if kind.startswith("'") and matching(name, DATASET_NAME_HOMES):
                continue
            code = lines[node.lineno - 1].strip()
            found.append(f"  {name}:{node.lineno} {kind}: {code}")
    return found


def test_the_literal_scan_finds_what_it_should():
    tree = ast.parse(
        "x = images.reshape(-1, 784) / 255.0\n"
        "y = np.zeros((n, 28, 28))\n"
        "def f(num_classes=10): return keras.layers.Dense(10), load_dataset('mnist')\n"
        "fontsize = 10; width = 28; colour = f'C{i % 10}'\n"
    )
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    kinds = [_literal_kind(node, parents, {"mnist"}) for _, node in _functions(tree)]
    assert sorted(kind.split()[0] for kind in kinds if kind) == sorted(
        ["784", "255", "28", "28", "10", "10", "'mnist'"]
    )


def test_the_allow_list_names_functions_that_exist():
    defined = {
        (name, node.name)
        for name, tree in TREES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
    }
    assert set(ALLOWED_255) <= defined, set(ALLOWED_255) - defined


def test_dataset_shape_scale_classes_and_names_come_from_the_constants():
    found = dataset_literals()
    assert not found, (
        f"{len(found)} literal(s) of the dataset's shape, scale, classes or name outside "
        "digitlab.data and digitlab.model; use their constants (or the run's own shape):\n"
        + "\n".join(found)
    )


if __name__ == "__main__":  # pragma: no cover - the to-do list without pytest's truncation
    pytest.main([__file__, "-q", "-p", "no:cacheprovider", "-vv"])


def test_importing_a_submodule_counts_its_package_init():
    """`import digitlab.report.pages` runs `digitlab/report/__init__.py` first (which imports
    compare and pages): an edge the loop test must see. A module's own package is already
    running and is not an edge, nor is the top package."""
    assert list(_parents_run("digitlab.report.pages", "digitlab.display")) == ["digitlab.report"]
    assert list(_parents_run("digitlab.report.pages", "digitlab.report.compare")) == []
    assert list(_parents_run("digitlab.errors", "digitlab.display")) == []

"""The layering the README states: lower layers never import higher ones, and no two modules of the
project import each other, directly or through others (imports inside functions count too)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP_LEVEL = {path.stem if path.suffix == ".py" else path.name
             for path in ROOT.iterdir() if path.suffix == ".py" or (path / "__init__.py").exists()}
# What each layer may import besides itself (README.md, "Layout"); the scripts and bench/ may import anything.
ALLOWED = {
    "CC": set(),
    "CC3D": {"CC"},
    "RCCA": {"CC"},
    "utils": set(),
    "references": {"CC", "CC3D", "RCCA", "utils"},
    "sync_batchnorm": {"utils"},
    "dataset": {"utils"},
    "networks": {"CC", "CC3D", "RCCA", "sync_batchnorm", "utils"},
}


def module_name(path):
    """'utils/cli.py' -> 'utils.cli'; a package's __init__.py -> the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path):
    """The project's modules that a file imports, by dotted name (relative imports resolved)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] in TOP_LEVEL}


def project_files():
    """Every Python file of the project outside tests/."""
    return [path for path in ROOT.rglob("*.py")
            if path.relative_to(ROOT).parts[0] in TOP_LEVEL | {f"{name}.py" for name in TOP_LEVEL}
            and "tests" not in path.relative_to(ROOT).parts]


def import_graph():
    """{module: modules of the project it imports}, edges only to modules that are files here."""
    modules = {module_name(path): path for path in project_files()}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in project_imports(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def test_no_layer_imports_one_above_it():
    violations = [(name, target) for name, targets in import_graph().items() for target in targets
                  if name.split(".")[0] in ALLOWED
                  and target.split(".")[0] not in ALLOWED[name.split(".")[0]] | {name.split(".")[0]}]
    assert violations == []


def test_no_modules_import_each_other():
    graph = import_graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_graph_sees_the_imports_it_checks():
    """The checks above would pass on an empty graph: the known edges must be in it."""
    graph = import_graph()
    assert "CC" in graph["CC3D"] and "CC" in graph["RCCA"]
    assert "utils.image_mean" in graph["networks.mmseg_ccnet"] and "utils.errors" in graph["dataset.datasets"]
    assert graph["CC"] == set()

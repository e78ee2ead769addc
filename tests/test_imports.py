"""The repo's root modules import one another one way: no circle of any length, imports inside functions included."""

import ast

from conftest import REPO


def root_import_graph() -> dict[str, set[str]]:
    """Each root module's name -> the other root modules it imports anywhere in its file (functions too)."""
    modules = {path.stem: path for path in REPO.glob("*.py")}
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
        graph[name] = (imported & modules.keys()) - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None: a depth-first search that meets a module still on its path."""
    on_path: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> list[str] | None:
        if module in on_path:
            return on_path[on_path.index(module) :] + [module]
        if module in done:
            return None
        on_path.append(module)
        for imported in sorted(graph[module]):
            cycle = visit(imported)
            if cycle:
                return cycle
        on_path.pop()
        done.add(module)
        return None

    return next((cycle for module in sorted(graph) if (cycle := visit(module))), None)


def test_find_cycle_sees_a_circle_of_any_length():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_imports_inside_functions():
    graph = root_import_graph()
    assert "tiny_model" in graph["runs"]  # imported only inside runs.load_tokenizer
    assert "torch" not in graph["generation"]  # only the repo's own modules


def test_root_modules_import_each_other_without_a_circle():
    cycle = find_cycle(root_import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)

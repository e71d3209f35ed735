"""Repository check: the package's modules import each other without circles.

Every `import` / `from ... import` of a module of the repository (`transformers.heterogeneity` and the checkpoint
families' `transformers.models.<family>`) by another counts, also those inside functions (deferred imports hide a circle from the interpreter, not from a reader: the two modules still depend on
each other). Run by `make quality`; exits non-zero naming each circle.
"""

import ast
import sys
from pathlib import Path


PACKAGE_DIR = Path(__file__).resolve().parent.parent / "src" / "transformers"  # only the repository's modules
PACKAGE = "transformers"


def module_names() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = path.relative_to(PACKAGE_DIR).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((PACKAGE, *parts))] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            candidates = [target, *(f"{target}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(candidate for candidate in candidates if candidate in modules and candidate != name)
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    modules = module_names()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    found = circles(graph)
    for component in found:
        print(f"Import circle between {component}.", file=sys.stderr)
    if not found:
        print(f"No import circles ({len(modules)} modules).")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

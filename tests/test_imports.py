"""The package's import graph, read from the source with ast: no cycles, no private names across packages.

Every import counts, also one inside a function: a lazy import still ties the two modules together.
An edge goes to the most specific module an import names (`from tinygpt_mlx.train import checkpoint`
-> `tinygpt_mlx.train.checkpoint`), not to the parent packages Python runs on the way.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tinygpt_mlx"
ROOT = PACKAGE.name


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py file of the package."""
    return {module_name(path, package): path for path in sorted(package.rglob("*.py"))}


def is_package(name: str, known: dict[str, Path]) -> bool:
    return known[name].name == "__init__.py"


def imports_of(name: str, known: dict[str, Path]) -> list[tuple[str, str | None]]:
    """(imported module, imported name or None) for every import of one module, relative ones resolved."""
    found = []
    here = name if is_package(name, known) else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(known[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule, None) if submodule in known else (base, alias.name))
    return [(target, imported) for target, imported in found if target == ROOT or target.startswith(ROOT + ".")]


def graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (names that are no module map to the closest one that is)."""
    edges: dict[str, set[str]] = {}
    for name in known:
        targets = set()
        for target, _ in imports_of(name, known):
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target != name:
                targets.add(target)
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return components


def package_of(name: str, known: dict[str, Path]) -> str:
    return name if is_package(name, known) else name.rpartition(".")[0]


def private_imports(known: dict[str, Path]) -> list[str]:
    """`from tinygpt_mlx.x import _name` where the importer lives in another package than x."""
    found = []
    for name in known:
        for target, imported in imports_of(name, known):
            if imported is None or not imported.startswith("_") or imported.startswith("__"):
                continue
            if package_of(target, known) != package_of(name, known):
                found.append(f"{name} imports {imported} from {target}")
    return found


def test_no_import_cycles() -> None:
    assert cycles(graph(modules())) == []


def test_no_private_names_across_packages() -> None:
    assert private_imports(modules()) == []


def test_the_checks_find_what_they_look_for(tmp_path: Path) -> None:
    """A tiny package with a cycle through a lazy import and a private import across packages."""
    pkg = tmp_path / ROOT
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from tinygpt_mlx.sub import b\n_helper = 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n    from tinygpt_mlx.a import _helper\n")
    (pkg / "sub" / "c.py").write_text("from .b import f\nfrom tinygpt_mlx.sub.b import _same_package\n")
    known = modules(pkg)
    assert cycles(graph(known)) == [[f"{ROOT}.a", f"{ROOT}.sub.b"]]
    assert private_imports(known) == [f"{ROOT}.sub.b imports _helper from {ROOT}.a"]

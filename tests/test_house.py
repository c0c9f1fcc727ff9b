"""The house rules the code keeps: no import circles, stt never imports search, private names stay private,
and the README's block table is the one the block configs generate."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stt", "search")


def _imports() -> dict[str, set[tuple[str, str]]]:
    """module -> {(imported module, imported name or "")}, for every import in the file, at any depth."""
    graph = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).glob("*.py")):
            mod = f"{pkg}.{path.stem}" if path.stem != "__init__" else pkg
            edges = set()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                    for alias in node.names:
                        full = f"{node.module}.{alias.name}"
                        is_module = (ROOT / (full.replace(".", "/") + ".py")).exists()
                        edges.add((full, "") if is_module else (node.module, alias.name))
                elif isinstance(node, ast.Import):
                    edges |= {(a.name, "") for a in node.names if a.name.split(".")[0] in PACKAGES}
            graph[mod] = edges
    return graph


def test_stt_never_imports_search():
    bad = [(m, t) for m, edges in _imports().items() if m.startswith("stt") for t, _ in edges if t.startswith("search")]
    assert not bad, bad


def test_no_import_circles_between_modules():
    graph = {m: {t for t, _ in edges if t != m and t not in PACKAGES} for m, edges in _imports().items()}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                pytest.fail("import circle: " + " -> ".join(trail[trail.index(t) :] + [m, t]))
            if t not in state:
                visit(t, trail + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_private_names_stay_in_their_module():
    bad = [
        (m, t, n) for m, edges in _imports().items() for t, n in edges if n.startswith("_") and not n.startswith("__")
    ]
    assert not bad, bad


def test_readme_block_table_is_generated_from_the_block_configs():
    from stt.blocks import block_table

    assert block_table() in (ROOT / "README.md").read_text(), "paste stt.blocks.block_table() into the README"

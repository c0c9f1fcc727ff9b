"""The house rules the code keeps: packages import only in the allowed directions, no import circles, stt never
imports search, private names stay private, tests mirror the packages, and the docs' block table is the one the
block configs generate."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stt", "search")

# stt's packages and what each may import (besides itself). core stands alone; data and model are independent
# of each other; decoding needs letters, not models; training needs all of those; the command line needs all.
STT_ALLOWED = {
    "stt.core": set(),
    "stt.data": {"stt.core"},
    "stt.model": {"stt.core"},
    "stt.decode": {"stt.core", "stt.data"},
    "stt.train": {"stt.core", "stt.data", "stt.model", "stt.decode"},
    "stt.cli": {"stt.core", "stt.data", "stt.model", "stt.decode", "stt.train"},
    "stt": {"stt.core", "stt.model"},  # stt/__init__.py: the public imports
}
# search's layers, lowest first: a module imports only from its own layer or lower ones (and any of stt).
SEARCH_LAYERS = [
    {"search.trials", "search.storage"},
    {"search.space", "search.template_space", "search.samplers", "search.fidelity", "search.pruners"},
    {"search.settings", "search.isolation", "search.workers"},
    {"search.objective", "search.stopping", "search.stretch", "search.rescore"},
    {"search.study", "search.slurm"},
    {"search.results"},
    {"search.cli", "search"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    base = ROOT / name.replace(".", "/")
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _imports() -> dict[str, set[tuple[str, str]]]:
    """module -> {(imported module, imported name or "")}, for every import in the file, at any depth."""
    graph = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            edges = set()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                    for alias in node.names:
                        full = f"{node.module}.{alias.name}"
                        edges.add((full, "") if _is_module(full) else (node.module, alias.name))
                elif isinstance(node, ast.Import):
                    edges |= {(a.name, "") for a in node.names if a.name.split(".")[0] in PACKAGES}
            graph[_module_name(path)] = edges
    return graph


def _package(module: str, packages) -> str:
    """The longest of ``packages`` that ``module`` is or lies inside."""
    return max((p for p in packages if module == p or module.startswith(p + ".")), key=len)


def test_stt_never_imports_search():
    bad = [(m, t) for m, edges in _imports().items() if m.startswith("stt") for t, _ in edges if t.startswith("search")]
    assert not bad, bad


def test_stt_packages_import_only_in_the_allowed_directions():
    bad = []
    for m, edges in _imports().items():
        if not m.startswith("stt"):
            continue
        mine = _package(m, STT_ALLOWED)
        for t, _ in edges:
            theirs = _package(t, STT_ALLOWED)
            if theirs != mine and theirs not in STT_ALLOWED[mine]:
                bad.append(f"{m} -> {t}")
    assert not bad, bad


def test_search_modules_import_only_from_their_layer_or_below():
    layer = {name: i for i, names in enumerate(SEARCH_LAYERS) for name in names}
    bad = []
    for m, edges in _imports().items():
        if not m.startswith("search"):
            continue
        mine = layer[_package(m, layer)]
        for t, _ in edges:
            if t.startswith("search") and layer[_package(t, layer)] > mine:
                bad.append(f"{m} -> {t}")
    assert not bad, bad


def test_every_module_has_its_place_in_the_rules():
    """A new package or search module must be placed in STT_ALLOWED or SEARCH_LAYERS, not slip past them."""
    layered = {name for names in SEARCH_LAYERS for name in names}
    for m in _imports():
        rules = STT_ALLOWED if m.startswith("stt") else layered
        assert any(m == p or m.startswith(p + ".") for p in rules), f"{m}: not in test_house's rules"


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


def test_tests_mirror_the_packages():
    """tests/stt/model/test_blocks.py tests stt/model/blocks.py: every test folder is a package, and back."""
    for pkg in PACKAGES:
        source = {  # packages of code (not of data files, like stt/configs)
            p.parent.relative_to(ROOT)
            for p in (ROOT / pkg).rglob("*.py")
            if p.name not in ("__init__.py", "__main__.py")
        }
        tests = {p.relative_to(ROOT / "tests") for p in (ROOT / "tests" / pkg).rglob("*") if p.is_dir()}
        tests = {t for t in tests if t.name != "__pycache__"}
        assert tests <= source, f"test folders without a package: {sorted(map(str, tests - source))}"
        untested = {s for s in source if not list((ROOT / "tests" / s).glob("test_*.py"))}
        assert not untested, f"packages without tests: {sorted(map(str, untested))}"


def test_the_blocks_table_in_the_docs_is_generated_from_the_block_configs():
    from stt.model.blocks import block_table

    assert block_table() in (ROOT / "docs" / "library.md").read_text(), "paste block_table() into docs/library.md"


def test_a_search_builds_a_trainer_in_one_place():
    """search.isolation.TrainJob: in a child process or in the worker, a trial's Trainer is built the same way."""
    places = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in (ROOT / "search").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Trainer"
    ]
    assert len(places) == 1 and places[0].startswith("search/isolation.py"), places

"""Dependencies point one way: tools -> micro -> pipelines -> kerasnets (the zoo), imports inside
function bodies included (they are where an upward import hides, because nothing fails at import).
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# folder -> (import name, rank): a module may import only from its own rank or below
LAYERS = {"kerasnets": ("kerasnets", 0), "pipelines": ("kerasnets.pipelines", 1),
          "micro": ("kerasnets.micro", 2), "tools": ("kerasnets.tools", 3)}


def _rank_of_import(module: str):
    """Rank of the kerasnets layer an absolute import names, or None for third-party modules."""
    best = None
    for import_name, rank in LAYERS.values():
        if module == import_name or module.startswith(import_name + "."):
            best = rank if best is None else max(best, rank)
    return best


def _imports(path: pathlib.Path):
    """(line, imported module) for every import statement in the file, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from kerasnets import tools` names a subpackage: judge each imported name
            if node.module in {name for name, _ in LAYERS.values()}:
                for alias in node.names:
                    yield node.lineno, f"{node.module}.{alias.name}"
            else:
                yield node.lineno, node.module


def _modules():
    for folder in LAYERS:
        yield from sorted((ROOT / folder).rglob("*.py"))


def upward_imports():
    found = []
    for path in _modules():
        own_rank = LAYERS[path.relative_to(ROOT).parts[0]][1]
        for line, module in _imports(path):
            rank = _rank_of_import(module)
            if rank is not None and rank > own_rank:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


def test_no_module_imports_a_higher_layer():
    assert upward_imports() == []


def test_the_walk_sees_function_level_imports(tmp_path, monkeypatch):
    """The check fails when a pipelines function imports tools (as the old orchestrator did)."""
    fake_root = tmp_path
    for folder in LAYERS:
        (fake_root / folder).mkdir()
    (fake_root / "pipelines" / "stage.py").write_text(
        "def run():\n    from kerasnets.tools import bench\n    return bench\n")
    (fake_root / "micro" / "ok.py").write_text("from kerasnets.pipelines import convert\n")
    (fake_root / "kerasnets" / "up.py").write_text("from kerasnets import micro\n")
    monkeypatch.setitem(globals(), "ROOT", fake_root)
    assert upward_imports() == ["kerasnets/up.py:1 imports kerasnets.micro",
                                "pipelines/stage.py:2 imports kerasnets.tools.bench"]


@pytest.mark.parametrize("folder", list(LAYERS))
def test_every_folder_is_walked(folder):
    assert any(True for _ in (ROOT / folder).rglob("*.py"))

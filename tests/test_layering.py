"""Dependencies run one way: workers -> scheduler -> engine, the store beside them; settings modules are leaves.

Read from the source (every import, at any depth of a module), so a new import that breaks the layering
fails here rather than as an import cycle later.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "scheduler", "workers", "store")
# what each package may import of the others
ALLOWED = {"engine": set(), "store": {"engine"}, "scheduler": {"engine", "store"},
           "workers": {"engine", "store", "scheduler"}}
LEAF_MODULES = ("scheduler.settings", "workers.settings", "store.settings")
# what a settings module may import at its top level: other settings, the error types, the key names
LEAF_ALLOWED = {"scheduler.settings", "store.settings", "scheduler.keys", "scheduler.exceptions",
                "store.exceptions", "workers.exceptions"}


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] in PACKAGES}


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "proto" not in p.parts)


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_the_layers_below_it(package: str) -> None:
    wrong = {f"{p.relative_to(ROOT)}: {name}" for p in _modules(package) for name in _imports(p)
             if name.split(".")[0] not in ALLOWED[package] | {package}}
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


@pytest.mark.parametrize("module", LEAF_MODULES)
def test_settings_modules_are_leaves(module: str) -> None:
    path = ROOT / (module.replace(".", "/") + ".py")
    assert _imports(path, top_level_only=True) <= LEAF_ALLOWED

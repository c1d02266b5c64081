"""The stage graph behind ``tj run`` / ``tj status``: rerun only what is stale.

Each stage declares the config sections it reads and the stages it consumes. Its *stamp* is
a hash of those sections, the upstream stamps and (for ``index``) a listing of the dataset
files. After a stage succeeds its stamp is written to ``<workdir>/state/<stage>.json``; a
stage is stale when the stamp it would have now differs from the recorded one, or its
recorded outputs are gone. Stages are themselves resumable, so rerunning one only redoes
work whose inputs changed (e.g. extraction skips entries with the same fingerprint).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinkjepa.config import PipelineConfig, save_config


@dataclass(frozen=True)
class Stage:
    name: str
    sections: tuple[str, ...]
    upstream: tuple[str, ...]
    run: Callable[[PipelineConfig], dict[str, Any]]
    outputs: Callable[[PipelineConfig], list[str]] = field(default=lambda cfg: [])
    """Paths (or URLs) the stage produces; a missing one makes the stage stale."""


def _run_index(cfg: PipelineConfig) -> dict[str, Any]:
    from thinkjepa.data.manifest import build_manifest

    if not cfg.data.root:
        raise ValueError("data.root is not set: pass --set data.root=DIR (an EgoDex-layout folder) or use `tj demo`")
    table, problems = build_manifest(cfg.data.root, cfg.path(cfg.data.manifest), cfg.data, cfg.sampling)
    import warnings

    for p in problems:  # dataset-level warnings (e.g. the split fell back to episodes) are the user's to read
        if p.clip_id is None and p.severity == "warning":
            warnings.warn(p.reason, stacklevel=1)
    return {"clips": table.num_rows, "problems": len(problems)}


def _run_extract(cfg: PipelineConfig) -> dict[str, Any]:
    from thinkjepa.extract.runner import run_shard

    summary = run_shard(cfg, shard=(0, 1))
    _raise_on_failures("extract", summary.failed, "tj-extract status")
    return _summary_dict(summary)


def _run_encode(cfg: PipelineConfig) -> dict[str, Any]:
    from thinkjepa.train.encode import run_encode

    summary = run_encode(cfg, shard=(0, 1))
    _raise_on_failures("encode", summary.failed, "tj cache show " + cfg.url(cfg.encoder.cache) + " KEY")
    return _summary_dict(summary)


def _raise_on_failures(stage: str, failed: dict[str, str], where: str) -> None:
    """A stage with failed entries stays stale: the next `tj run` retries only those.

    Clips too short for any window are recorded under their clip id (no ``@t``); the index
    already leaves them out, so they are not failures of this stage."""
    failed = {k: v for k, v in failed.items() if "@" in k}
    if failed:
        first = "; ".join(f"{k}: {v}" for k, v in list(failed.items())[:3])
        raise RuntimeError(
            f"{stage}: {len(failed)} entries failed (first: {first}). Fix the input or settings, "
            f"see `{where}`, then rerun `tj run` (committed entries are kept and skipped)."
        )


def _run_train(cfg: PipelineConfig) -> dict[str, Any]:
    from thinkjepa.train.loop import run_training

    results = {}
    for variant in cfg.eval.variants:
        results[variant] = str(run_training(cfg, variant))
    return results


def _run_eval(cfg: PipelineConfig) -> dict[str, Any]:
    from thinkjepa.evaluate.report import run_eval

    return run_eval(cfg)


def _summary_dict(summary: Any) -> dict[str, Any]:
    if isinstance(summary, dict):
        return summary
    if hasattr(summary, "__dataclass_fields__"):
        out = {}
        for k in summary.__dataclass_fields__:
            v = getattr(summary, k)
            out[k] = len(v) if isinstance(v, (list, tuple, dict, set)) else v
        return out
    return {"result": str(summary)}


STAGES: tuple[Stage, ...] = (
    Stage("index", ("data", "sampling"), (), _run_index, lambda c: [str(c.path(c.data.manifest))]),
    Stage("extract", ("thinker", "sampling"), ("index",), _run_extract, lambda c: [c.url(c.thinker.cache)]),
    Stage("encode", ("encoder", "sampling"), ("index",), _run_encode, lambda c: [c.url(c.encoder.cache)]),
    Stage("train", ("model", "train", "variants", "eval.variants"), ("extract", "encode"), _run_train,
          lambda c: [str(c.path(c.train.out))]),
    Stage("eval", ("eval",), ("train",), _run_eval, lambda c: [str(c.path(c.eval.out))]),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def _stage(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")


def _dataset_listing(root: str | None) -> str:
    """Names, sizes and mtimes of the dataset files: edits to the data make ``index`` stale."""
    if not root or not Path(root).exists():
        return "missing"
    h = hashlib.sha256()
    for p in sorted(Path(root).rglob("*")):
        if p.suffix in (".mp4", ".hdf5"):
            st = p.stat()
            h.update(f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _state_dir(cfg: PipelineConfig) -> Path:
    return cfg.path("{workdir}/state")


def _output_exists(path: str) -> bool:
    if "://" in path and not path.startswith("file://"):
        import fsspec

        fs, p = fsspec.core.url_to_fs(path)
        return fs.exists(p)
    return Path(path.removeprefix("file://")).exists()


def _config_stamp(cfg: PipelineConfig, stage: Stage) -> str:
    payload = cfg.section_fingerprint(*stage.sections)
    if stage.name == "index":
        payload += _dataset_listing(cfg.data.root)
    return payload


def compute_stamps(cfg: PipelineConfig) -> dict[str, str]:
    """The stamp each stage would carry if it ran now (upstream stamps folded in)."""
    stamps: dict[str, str] = {}
    for stage in STAGES:
        h = hashlib.sha256(_config_stamp(cfg, stage).encode())
        for up in stage.upstream:
            h.update(stamps[up].encode())
        stamps[stage.name] = h.hexdigest()[:16]
    return stamps


def read_state(cfg: PipelineConfig, name: str) -> dict[str, Any] | None:
    p = _state_dir(cfg) / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def status(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """Per stage: stale or not, and why."""
    stamps = compute_stamps(cfg)
    rows: list[dict[str, Any]] = []
    stale_names: set[str] = set()
    for stage in STAGES:
        state = read_state(cfg, stage.name)
        reasons: list[str] = []
        if state is None:
            reasons.append("never ran")
        else:
            if state.get("config_stamp") != _config_stamp(cfg, stage):
                changed = [s for s in stage.sections if state.get("sections", {}).get(s) != cfg.section_fingerprint(s)]
                if stage.name == "index" and state.get("dataset") != _dataset_listing(cfg.data.root):
                    changed.append("dataset files")
                reasons.append("inputs changed: " + (", ".join(changed) or "config"))
            missing = [o for o in stage.outputs(cfg) if not _output_exists(o)]
            if missing:
                reasons.append("output missing: " + ", ".join(missing))
            for up in stage.upstream:
                if up in stale_names:
                    reasons.append(f"upstream {up} is stale")
                elif state.get("upstream", {}).get(up) != stamps[up]:
                    reasons.append(f"upstream {up} was rerun")
        if reasons:
            stale_names.add(stage.name)
        rows.append({
            "stage": stage.name,
            "stale": bool(reasons),
            "reasons": reasons,
            "last_run": state.get("finished_at") if state else None,
            "result": state.get("result") if state else None,
        })
    return rows


def _write_state(cfg: PipelineConfig, stage: Stage, stamps: dict[str, str], result: dict[str, Any]) -> None:
    d = _state_dir(cfg)
    d.mkdir(parents=True, exist_ok=True)
    state = {
        "stage": stage.name,
        "stamp": stamps[stage.name],
        "config_stamp": _config_stamp(cfg, stage),
        "sections": {s: cfg.section_fingerprint(s) for s in stage.sections},
        "dataset": _dataset_listing(cfg.data.root) if stage.name == "index" else None,
        "upstream": {u: stamps[u] for u in stage.upstream},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "result": result,
    }
    tmp = d / f".{stage.name}.json.tmp"
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(d / f"{stage.name}.json")


def run(
    cfg: PipelineConfig,
    stages: list[str] | None = None,
    force: bool = False,
    on_event: Callable[[str, str, dict[str, Any]], None] | None = None,
) -> list[tuple[str, str]]:
    """Run the stale stages among ``stages`` (default: all) in order.

    Returns ``(stage, "ran" | "fresh")`` pairs. A stage's upstream must be fresh; asking for
    a downstream stage alone runs it only when its upstream is already fresh.
    """
    wanted = list(stages) if stages else list(STAGE_NAMES)
    for name in wanted:
        _stage(name)
    save_config(cfg, cfg.path("{workdir}"), "pipeline.config.yaml")
    done: list[tuple[str, str]] = []
    for stage in STAGES:
        if stage.name not in wanted:
            continue
        rows = {r["stage"]: r for r in status(cfg)}  # once per stage: earlier stages may have just run
        row = rows[stage.name]
        blocked = [u for u in stage.upstream if rows[u]["stale"]]
        if blocked:
            raise RuntimeError(
                f"stage {stage.name}: upstream {', '.join(blocked)} is stale; run `tj run {' '.join(blocked)} {stage.name}`"
            )
        if not row["stale"] and not force:
            done.append((stage.name, "fresh"))
            if on_event:
                on_event(stage.name, "fresh", {})
            continue
        if on_event:
            on_event(stage.name, "start", {"reasons": row["reasons"]})
        result = stage.run(cfg)
        _write_state(cfg, stage, compute_stamps(cfg), result)
        done.append((stage.name, "ran"))
        if on_event:
            on_event(stage.name, "done", result)
    return done

"""The stage graph behind ``tj run`` / ``tj status``: rerun only what is stale.

Each stage declares the config sections it reads and the stages it consumes. Its *stamp* is
a hash of those sections, the upstream stamps, (for ``index``) a listing of the dataset
files, the code, engine versions and model identities that compute it
(``thinkjepa.provenance``; ``tj status`` names what changed, e.g. ``train/pooling.py
changed``) and (for ``train``) a brief of the training data (``train.run_inputs.training_data``).
``tj run --keep STAGE`` keeps a stale output on purpose and the stamp records it. A stage's state comes from what its outputs hold wherever they can say it:

* ``extract`` and ``encode`` (the *shardable* stages) are fresh exactly when every window the
  manifest plans is committed with the fingerprint the config gives it now, whichever command
  or shard wrote it (``stage_run.tally_windows``, the same count as ``tj-extract status``);
* ``index`` is fresh when the manifest was built from this data root with these settings and
  no dataset file changed since (the dataset listing recorded in its stamp, or, for a
  manifest written by ``tj data index``, no dataset file newer than the manifest);
* ``train`` and ``eval`` have no per-window outputs: their stamp, written by ``tj run`` when
  they succeed, says with which inputs they ran; ``train`` is also stale when a run it
  recorded is no longer finished (a later ``tj-train`` failed or was stopped: ``summary.json``,
  the run's done mark, is gone).

Stamps live in ``<workdir>/state/<stage>.json`` (``<stage>.<part>.json`` for one shard),
written atomically and durably (``thinkjepa.cache_schema.fsio``), and carry the inputs they were computed
from. ``tj run --shard I/N`` runs only that shard of the shardable stages; train and eval need
every shard and refuse to start while one is pending unless ``allow_partial`` (recorded in
their stamp, which then stays stale until they run on complete inputs).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinkjepa.cache_schema.fsio import atomic_write_json
from thinkjepa.config import PipelineConfig, save_config
from thinkjepa.data.listing import DatasetListing, dataset_listing


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


def _run_extract(cfg: PipelineConfig, shard: tuple[int, int] = (0, 1)) -> dict[str, Any]:
    from thinkjepa.extract.runner import run_shard

    summary = run_shard(cfg, shard=shard)
    _raise_on_failures("extract", summary.failed, "tj-extract status")
    return _summary_dict(summary)


def _run_encode(cfg: PipelineConfig, shard: tuple[int, int] = (0, 1)) -> dict[str, Any]:
    from thinkjepa.extract.encode import run_encode

    summary = run_encode(cfg, shard=shard)
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
            f"see `{where}`, then rerun the same `tj run` (committed entries are kept and skipped)."
        )


def _run_train(cfg: PipelineConfig, partial: bool = False) -> dict[str, Any]:
    from thinkjepa.train.seeds import train_seeds

    results = {}
    for variant in cfg.eval.variants:
        # partial: the pending shards' entries are stale, and are left out rather than refused
        for seed, (_, ran) in train_seeds(cfg, variant, skip_finished=True, allow_stale=partial).items():
            results[f"{variant}/seed-{seed}"] = "trained" if ran else "unchanged, kept"
    return results


def _run_eval(cfg: PipelineConfig) -> dict[str, Any]:
    from thinkjepa.evaluate import run_eval

    result = run_eval(cfg)  # metrics.json holds it all; the stage record keeps the headline
    return {"report": result["report"], "windows": result["window_set"]["windows"],
            "ADE": {name: round(m["ADE"], 5) for name, m in result["models"].items()}}


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
SHARDABLE = ("extract", "encode")
"""Stages whose work splits by clip over ``--shard I/N``; the others need every shard done."""


def _stage(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")


def _listing(cfg: PipelineConfig) -> DatasetListing:
    from thinkjepa.stage_run import listing_cache_dir

    return dataset_listing(cfg.data.root, listing_cache_dir(cfg))


# -- stamps ---------------------------------------------------------------------------------


def _state_dir(cfg: PipelineConfig) -> Path:
    return cfg.path("{workdir}/state")


def _stamp_path(cfg: PipelineConfig, name: str, part: str | None = None) -> Path:
    return _state_dir(cfg) / (f"{name}.{part}.json" if part else f"{name}.json")


def _output_exists(path: str) -> bool:
    if "://" in path and not path.startswith("file://"):
        import fsspec

        fs, p = fsspec.core.url_to_fs(path)
        return fs.exists(p)
    return Path(path.removeprefix("file://")).exists()


def _config_stamp(cfg: PipelineConfig, stage: Stage, listing: DatasetListing) -> str:
    payload = cfg.section_fingerprint(*stage.sections)
    if stage.name == "index":
        payload += listing.digest
    return payload


def _provenance(stage: Stage, cfg: PipelineConfig) -> dict[str, Any]:
    """Code, engines and model identities of the stage (``thinkjepa.provenance``)."""
    from thinkjepa.provenance import stage_inputs, stage_models

    return stage_inputs(stage.name, stage_models(stage.name, cfg))


def _data(stage: Stage, cfg: PipelineConfig) -> dict[str, str] | None:
    """What train reads beyond its upstream stamps: the manifest and every cache entry's
    identity. Re-extracted or re-encoded windows (an edited episode) change it."""
    if stage.name != "train":
        return None
    from thinkjepa.train.run_inputs import training_data

    return _kept_training_data(cfg, lambda: training_data(cfg))


def _kept_training_data(cfg: PipelineConfig, compute: Any) -> dict[str, str]:
    """``compute()`` (``training_data``: every entry's identity, about 1.5 CPU s at 340k episodes), reused
    from the last call while its inputs are unchanged: the manifest's identity and both
    stores' folders (``CacheReader.folder_state``: any commit changes them), the rule
    ``stage_run.cached_status`` keeps statuses by (nothing reused within ``RACY_S`` of a
    change; a remote store, whose folders have no mtimes, is read every time)."""
    import json
    import time

    from thinkjepa.cache_schema import CacheReader, store_exists
    from thinkjepa.cache_schema.fsio import atomic_write_json
    from thinkjepa.cache_schema.record_listing import RACY_S
    from thinkjepa.provenance import code_digest
    from thinkjepa.stage_run import file_identity, listing_cache_dir

    manifest = cfg.path(cfg.data.manifest)
    stores: dict[str, Any] = {}
    for name, url in (("jepa", cfg.url(cfg.encoder.cache)), ("vlm", cfg.url(cfg.thinker.cache))):
        stores[name] = CacheReader(url).folder_state() if store_exists(url) else "missing"
        if stores[name] is None:
            return compute()
    ident = file_identity(manifest)
    key = json.loads(json.dumps({"manifest": [str(manifest), ident], "stores": stores,
                                 "code": code_digest(("train/run_inputs.py", "cache_schema/*.py"))}))
    path = Path(listing_cache_dir(cfg)) / "training-data.json"
    try:
        doc = json.loads(path.read_text())
        if doc.get("key") == key and doc.get("trusted") and isinstance(doc.get("result"), dict):
            return doc["result"]
    except (OSError, ValueError, AttributeError):
        pass  # missing, torn or foreign: computed afresh
    result = compute()
    newest = max([ident[1] if ident else 0, *(v for s in stores.values() if isinstance(s, dict) for v in s.values())])
    try:
        atomic_write_json(path, {"key": key, "trusted": (time.time_ns() - newest) / 1e9 > RACY_S, "result": result},
                          durable=False, indent=None)
    except OSError:
        pass
    return result


def _runs(stage: Stage, cfg: PipelineConfig) -> dict[str, str | None] | None:
    if stage.name != "train":
        return None
    from thinkjepa.train.seeds import finished_runs

    return finished_runs(cfg)


def compute_stamps(cfg: PipelineConfig, listing: DatasetListing | None = None,
                   train_data: dict[str, str] | None = None) -> dict[str, str]:
    """The stamp each stage would carry if it ran now (upstream stamps folded in).
    ``train_data``: ``_data`` of the train stage, when the caller computed it already."""
    from thinkjepa.provenance import digest

    listing = listing or _listing(cfg)
    stamps: dict[str, str] = {}
    for stage in STAGES:
        h = hashlib.sha256(_config_stamp(cfg, stage, listing).encode())
        data = train_data if stage.name == "train" and train_data is not None else _data(stage, cfg)
        h.update(digest([_provenance(stage, cfg), data]).encode())
        for up in stage.upstream:
            h.update(stamps[up].encode())
        stamps[stage.name] = h.hexdigest()[:16]
    return stamps


def read_state(cfg: PipelineConfig, name: str, part: str | None = None) -> dict[str, Any] | None:
    p = _stamp_path(cfg, name, part)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except ValueError as e:  # only a foreign write can tear it (ours are atomic): say so
        raise ValueError(f"stage stamp {p} is not valid JSON ({e}); delete it and rerun `tj run --force {name}`") from e


def _shard_states(cfg: PipelineConfig, name: str) -> list[dict[str, Any]]:
    d = _state_dir(cfg)
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.glob(f"{name}.shard-*.json")):
        try:
            out.append(json.loads(p.read_text()))
        except ValueError:
            continue
    return out


def _file_identity(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _write_state(
    cfg: PipelineConfig,
    stage: Stage,
    stamps: dict[str, str],
    listing: DatasetListing,
    result: dict[str, Any],
    *,
    part: str | None = None,
    partial: dict[str, str] | None = None,
    kept: list[str] | None = None,
) -> Path:
    """The stamp of a successful run: what it ran on (every input it was computed from), when,
    and what it did. Atomic and durable: a crash leaves the old stamp or the new one.
    ``kept``: the stage did not run; its output was kept on purpose despite these reasons."""
    state = {
        "stage": stage.name,
        "stamp": stamps[stage.name],
        "config_stamp": _config_stamp(cfg, stage, listing),
        "sections": {s: cfg.section_fingerprint(s) for s in stage.sections},
        "dataset": (
            {"root": cfg.data.root, "digest": listing.digest, "files": listing.files}
            if stage.name == "index" else None
        ),
        "manifest": _file_identity(cfg.path(cfg.data.manifest)),
        "upstream": {u: stamps[u] for u in stage.upstream},
        "provenance": _provenance(stage, cfg),
        "data": _data(stage, cfg),
        "kept": kept or None,
        "runs": _runs(stage, cfg),
        "part": part,
        "partial": partial or None,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "result": result,
    }
    return atomic_write_json(_stamp_path(cfg, stage.name, part), state, default=str)


# -- status ---------------------------------------------------------------------------------


def _window_status(cfg: PipelineConfig, name: str, listing: DatasetListing) -> dict[str, Any]:
    # ``listing``: the status's own, so the dataset is listed once per command, not once per stage
    if name == "extract":
        from thinkjepa.extract.status import extraction_status

        return extraction_status(cfg, list_limit=0, listing=listing)
    from thinkjepa.extract.encode import encode_status

    return encode_status(cfg, list_limit=0, listing=listing)


def _shard_spec(part: dict[str, Any], n: int) -> str:
    return f"{part['index']}/{n}"


def _ranges(indices: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``0-2, 5, 7-8``."""
    out: list[str] = []
    for i in indices:
        if out and int(out[-1].split("-")[-1]) == i - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return ", ".join(out)


def _finish_command(name: str, st: dict[str, Any]) -> str:
    n = st["shard_count"]
    todo = [r["index"] for r in st["shards"] if not r["complete"]]
    if n == 1:
        return f"tj run {name}"
    if len(todo) <= 3:
        return "; ".join(f"tj run --shard {i}/{n} {name}" for i in todo)
    return f"tj run --shard I/{n} {name}, for I in {_ranges(todo)}"


def _manifest_provenance(path: Path) -> dict[str, Any] | None:
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta.get(b"thinkjepa.manifest", b"null"))
    except (OSError, ValueError):
        return None


def _index_reasons(cfg: PipelineConfig, stage: Stage, state: dict | None, listing: DatasetListing) -> list[str]:
    manifest = cfg.path(cfg.data.manifest)
    if not manifest.exists():
        return ["never ran" if state is None else f"output missing: {manifest}"]
    if state is not None and state.get("manifest") == _file_identity(manifest):
        # The manifest is the one this stamp's run wrote: its inputs say everything.
        if state.get("config_stamp") == _config_stamp(cfg, stage, listing):
            return []
        changed = [s for s in stage.sections if state.get("sections", {}).get(s) != cfg.section_fingerprint(s)]
        if (state.get("dataset") or {}).get("digest") != listing.digest:
            changed.append("dataset files")
        return ["inputs changed: " + (", ".join(changed) or "config")]
    # Written by another command (`tj data index`): judge it by what it records of itself.
    prov = _manifest_provenance(manifest)
    if not prov or "data" not in prov:
        return ["never ran" if state is None else "manifest was rewritten by another command"]
    changed = []
    if cfg.data.root and prov.get("root") != str(Path(cfg.data.root).resolve()):
        changed.append(f"data.root (manifest made from {prov.get('root')})")
    for section in stage.sections:
        if prov.get(section) != getattr(cfg, section).model_dump(mode="json"):
            changed.append(section)
    if listing.newest_mtime_ns > manifest.stat().st_mtime_ns:
        changed.append("dataset files (changed after the manifest was written)")
    return ["inputs changed: " + ", ".join(changed)] if changed else []


def _newest_state(states: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(states, key=lambda st: st.get("finished_at") or "", default=None)


def _provenance_reasons(stage: Stage, cfg: PipelineConfig, state: dict[str, Any] | None) -> list[str]:
    """Code, engine or model changes since the stamp was written, named (``train/pooling.py
    changed``, ``vllm 0.32.0 -> 0.33.0``, ``thinker revision abc -> def``)."""
    from thinkjepa.provenance import describe_changes, recorded_stage_inputs

    # shardable stages: what their runner recorded last, whichever command ran it
    old = recorded_stage_inputs(cfg.workdir, stage.name) if stage.name in SHARDABLE else None
    old = old or (state or {}).get("provenance")  # None: a stamp of an older version, settings decide
    return describe_changes(old, _provenance(stage, cfg))


def _training_reasons(cfg: PipelineConfig, state: dict[str, Any], data: dict[str, str] | None) -> list[str]:
    """Training data changed since the stamp (re-extracted / re-encoded windows, another
    manifest: ``data``, the train stage's ``_data`` now), or a run that is not finished under
    the settings it would get now (a failed or interrupted ``tj-train``)."""
    from thinkjepa.train.seeds import finished_runs

    out = []
    old, new = state.get("data"), data
    if old is not None and old != new:
        what = [k for k in sorted(set(old) | set(new or {})) if old.get(k) != (new or {}).get(k)]
        out.append("training data changed: " + ", ".join(what))
    now = finished_runs(cfg)
    bad = [name for name, fp in (state.get("runs") or {}).items() if now.get(name) != fp]
    if bad:
        out.append("runs not finished as the stamp recorded them (a later tj-train failed, was stopped or "
                   "retrained them): " + ", ".join(bad))
    return out


def _newest(states: list[dict[str, Any] | None], key: str = "finished_at") -> str | None:
    times = [s.get(key) for s in states if s and s.get(key)]
    return max(times) if times else None


def status(cfg: PipelineConfig, listing: DatasetListing | None = None) -> list[dict[str, Any]]:
    """Per stage: ``stale`` or not and why, the windows it has done / stale / failed / pending
    (shardable stages), the shards not yet complete, and ``next``: the command that would
    make it fresh."""
    listing = listing or _listing(cfg)
    train_data = _data(_stage("train"), cfg)  # once: every cache entry's identity (stamps and reasons)
    stamps = compute_stamps(cfg, listing, train_data)
    rows: list[dict[str, Any]] = []
    by_name: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        state = read_state(cfg, stage.name)
        reasons: list[str] = []
        row: dict[str, Any] = {"stage": stage.name, "windows": None, "shard_count": None,
                               "incomplete_shards": [], "partial": None, "next": None}
        for up in stage.upstream:
            if by_name[up]["stale"]:
                reasons.append(f"upstream {up} is stale")
        if stage.name != "index":
            reasons += _provenance_reasons(stage, cfg, state or _newest_state(_shard_states(cfg, stage.name)))
        if stage.name == "index":
            reasons += _index_reasons(cfg, stage, state, listing)
            if state is not None and state.get("manifest") == _file_identity(cfg.path(cfg.data.manifest)):
                reasons += _provenance_reasons(stage, cfg, state)
            row["problems"] = list(listing.problems)  # folders the listing left out (loops, unreadable)
            last = state.get("finished_at") if state else None
        elif stage.name in SHARDABLE:
            try:
                st = _window_status(cfg, stage.name, listing)
            except (FileNotFoundError, ValueError) as e:
                reasons.append(str(e))
            else:
                row["windows"] = st["totals"]
                row["shard_count"] = st["shard_count"]
                row["incomplete_shards"] = [_shard_spec(r, st["shard_count"]) for r in st["shards"] if not r["complete"]]
                if not st["complete"]:
                    t = st["totals"]
                    bits = [f"{t[k]} {k}" for k in ("stale", "failed", "pending") if t[k]]
                    reasons.append(f"{t['done']} of {t['windows']} windows done ({', '.join(bits)})")
                    row["next"] = _finish_command(stage.name, st)
            last = _newest([state, *_shard_states(cfg, stage.name)])
        else:
            if state is None:
                reasons.append("never ran")
            else:
                if state.get("config_stamp") != _config_stamp(cfg, stage, listing):
                    changed = [s for s in stage.sections
                               if state.get("sections", {}).get(s) != cfg.section_fingerprint(s)]
                    reasons.append("inputs changed: " + (", ".join(changed) or "config"))
                missing = [o for o in stage.outputs(cfg) if not _output_exists(o)]
                if missing:
                    reasons.append("output missing: " + ", ".join(missing))
                for up in stage.upstream:
                    if not by_name[up]["stale"] and state.get("upstream", {}).get(up) != stamps[up]:
                        reasons.append(f"upstream {up} was rerun")
                if stage.name == "train":
                    reasons += _training_reasons(cfg, state, train_data)
                if state.get("partial"):
                    row["partial"] = state["partial"]
                    reasons.append("ran with --allow-partial on incomplete inputs ("
                                   + "; ".join(f"{k}: {v}" for k, v in state["partial"].items()) + ")")
            last = state.get("finished_at") if state else None
        if reasons and row["next"] is None:
            waits = [u for u in stage.upstream if by_name[u]["stale"]]
            row["next"] = f"tj run {stage.name}" + (f" (once {', '.join(waits)} is fresh)" if waits else "")
        row.update(stale=bool(reasons), reasons=reasons, last_run=last, result=state.get("result") if state else None,
                   kept=state.get("kept") if state else None)
        rows.append(row)
        by_name[stage.name] = row
    return rows


# -- run ------------------------------------------------------------------------------------


def _pending_inputs(rows: dict[str, dict[str, Any]], stage: Stage) -> dict[str, str]:
    """Shardable upstream stages that are not complete: ``{stage: what is missing}``."""
    out = {}
    for up in stage.upstream:
        r = rows[up]
        own_inputs_fresh = not any(rows[u]["stale"] for u in _stage(up).upstream)
        if up in SHARDABLE and r["stale"] and r["windows"] is not None and own_inputs_fresh:
            shards = ", ".join(r["incomplete_shards"]) or "-"
            out[up] = f"{'; '.join(r['reasons'])}; shards not complete: {shards}"
    return out


def run(
    cfg: PipelineConfig,
    stages: list[str] | None = None,
    force: bool = False,
    on_event: Callable[[str, str, dict[str, Any]], None] | None = None,
    *,
    shard: tuple[int, int] | None = None,
    allow_partial: bool = False,
    dry_run: bool = False,
    keep: list[str] | None = None,
) -> list[tuple[str, str]]:
    """Run the stale stages among ``stages`` (default: all) in order.

    Returns ``(stage, "ran" | "fresh" | "left" | "kept")`` pairs (``dry_run``: ``"would run"``
    instead of running, each with a ``would run`` event carrying the reasons; no stage, stamp or
    config is written (only the status memos ``status`` refreshes), and a stage that would run
    counts as fresh for the stages after it). ``keep``: stale stages whose output is kept on
    purpose, their stamp recording the overridden reasons. A stage's upstream must be fresh; a
    stage that consumes a shardable stage refuses while a shard of it is pending (listing the
    shards) unless ``allow_partial``. ``shard = (I, N)``: run only shard I of the shardable
    stages; the others are ``left`` to the job that runs once every shard is done (``index``
    must then be fresh already: every shard reads the same manifest).

    ``keep``: stages whose output is kept on purpose although stale (a code or engine change
    the user knows to be harmless): their stamp is rewritten with the current inputs and
    records the reasons it overrode (``kept``); the outcome is ``kept``.
    """
    from thinkjepa.shards import part_name, validate_shard

    wanted = list(stages) if stages else list(STAGE_NAMES)
    for name in [*wanted, *(keep or [])]:
        _stage(name)
    for name in keep or []:
        if name in SHARDABLE:
            raise ValueError(f"--keep {name}: its entries carry their own fingerprints (code and engines included), "
                             "so a kept store would still read as stale; rerun it, or keep the stages after it")
    part = None
    if shard is not None:
        validate_shard(*shard)
        part = part_name(*shard)
    if not dry_run:
        save_config(cfg, cfg.path("{workdir}"), "pipeline.config.yaml")

    def event(name: str, what: str, info: dict[str, Any]) -> None:
        if on_event:
            on_event(name, what, info)

    listing = _listing(cfg)
    rows = {r["stage"]: r for r in status(cfg, listing)}
    done: list[tuple[str, str]] = []
    planned: set[str] = set()  # dry run: the stages that would have run
    for stage in STAGES:
        if stage.name not in wanted:
            continue
        row = rows[stage.name]
        if shard is not None and stage.name not in SHARDABLE:
            if stage.name == "index":
                if row["stale"]:
                    raise RuntimeError(
                        f"stage index is stale ({'; '.join(row['reasons'])}): run `tj run index` once before "
                        "the shards start (every shard reads the same manifest)"
                    )
                done.append((stage.name, "fresh"))
                event(stage.name, "fresh", {})
            else:
                done.append((stage.name, "left"))
                event(stage.name, "left", {"why": f"needs every shard: run `tj run {stage.name}` once all are done"})
            continue
        partial = {u: w for u, w in _pending_inputs(rows, stage).items() if u not in planned}
        if partial and not allow_partial:
            lines = "; ".join(f"{k}: {v}" for k, v in partial.items())
            raise RuntimeError(
                f"stage {stage.name} needs every shard of {', '.join(partial)}, and some are not done ({lines}). "
                f"Run the pending shards (`tj run --shard I/N`), or pass --allow-partial to run {stage.name} "
                "on what is there (recorded in its stamp)"
            )
        blocked = [u for u in stage.upstream if rows[u]["stale"] and u not in partial and u not in planned]
        if blocked:
            raise RuntimeError(
                f"stage {stage.name}: upstream {', '.join(blocked)} is stale; run `tj run {' '.join(blocked)} {stage.name}`"
            )
        if not row["stale"] and not force:
            done.append((stage.name, "fresh"))
            event(stage.name, "fresh", {})
            continue
        if stage.name in (keep or []) and row["stale"] and not dry_run:
            _write_state(cfg, stage, compute_stamps(cfg, listing), listing, row.get("result") or {},
                         partial=partial, kept=row["reasons"])
            done.append((stage.name, "kept"))
            event(stage.name, "kept", {"reasons": row["reasons"]})
            rows = {r["stage"]: r for r in status(cfg, listing)}
            continue
        if dry_run:
            planned.add(stage.name)
            done.append((stage.name, "would run"))
            event(stage.name, "would run", {"reasons": row["reasons"] or ["--force"], "shard": part,
                                            "partial": partial or None})
            continue
        event(stage.name, "start", {"reasons": row["reasons"], "shard": part, "partial": partial or None})
        if stage.name in SHARDABLE:
            result = stage.run(cfg, shard=shard or (0, 1))  # type: ignore[call-arg]
        elif stage.name == "train":
            result = stage.run(cfg, partial=bool(partial))  # type: ignore[call-arg]
        else:
            result = stage.run(cfg)
        if partial:
            result = {**result, "partial": partial}
        stamp_part = part if shard is not None and shard[1] > 1 else None
        _write_state(cfg, stage, compute_stamps(cfg, listing), listing, result, part=stamp_part, partial=partial)
        done.append((stage.name, "ran"))
        event(stage.name, "done", result)
        if stage.name == "index":
            listing = _listing(cfg)
        rows = {r["stage"]: r for r in status(cfg, listing)}  # what just ran changes what follows
    return done

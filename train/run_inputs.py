"""What a training run read: manifest, caches, the entries of its windows, its episodes.

``run_inputs`` describes the data of a run; its ``digest`` goes into every checkpoint and the
full description into ``inputs.json`` of the run folder. A run resumes ``last.pt`` only when
both its settings (``run_fingerprint`` below) and its inputs are unchanged; otherwise
``describe_changes`` says what changed (the manifest, a cache replaced, windows re-extracted
or re-encoded, added or removed, an episode edited). ``check_caches`` refuses caches written
by another model or with other settings than the config names, before any step is taken.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

from thinkjepa.cache_schema import CacheReader
from thinkjepa.config import PipelineConfig
from thinkjepa.provenance import model_key

INPUTS_FILE = "inputs.json"


class StaleInputError(ValueError):
    """The data under a run changed since its checkpoint, or does not match the config."""


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def store_id(reader: CacheReader) -> str:
    """A cache's identity: its location and its root metadata (fixed when it was created)."""
    return f"{reader.url}#{_sha(reader.meta.to_dict())}"


def check_caches(cfg: PipelineConfig, jepa: CacheReader, vlm: CacheReader | None) -> None:
    """Refuse caches that hold other entries, or were written with other models or settings,
    than ``cfg`` names: the one check of a cache against the config, made once per open."""
    if jepa.meta.kind != "jepa":
        raise StaleInputError(f"{jepa.url} holds {jepa.meta.kind!r} entries, not V-JEPA2 latents")
    if vlm is not None and vlm.meta.kind != "vlm":
        raise StaleInputError(f"{vlm.url} holds {vlm.meta.kind!r} entries, not thinker states")
    problems = []
    for name, reader, section, want in (("JEPA", jepa, "encoder", cfg.encoder), ("VLM", vlm, "thinker", cfg.thinker)):
        if reader is None:
            continue
        expected = {"model": model_key(want.model), "revision": want.revision, "storage_dtype": want.storage_dtype}
        problems += [f"{name} cache {reader.url}: {k} is {getattr(reader.meta, k)!r}, config {section}.{k} is "
                     f"{getattr(want, k)!r}" + (" (the cache holds states of another model)" if k == "model" else "")
                     for k, v in expected.items() if getattr(reader.meta, k) != v]
        stored, sampling = reader.meta.extra.get("sampling"), cfg.sampling.model_dump(mode="json")
        if stored is not None and stored != sampling:
            diff = [f"{k}: cache {stored.get(k)!r}, config {sampling[k]!r}" for k in sampling if stored.get(k) != sampling[k]]
            problems.append(f"the {name} cache at {reader.url} was built with other sampling settings ({'; '.join(diff)})")
    if vlm is not None and list(vlm.meta.layers) != [int(x) for x in cfg.thinker.layers]:
        problems.append(f"VLM cache {vlm.url}: layers {vlm.meta.layers}, config thinker.layers {list(cfg.thinker.layers)}")
    if problems:
        raise StaleInputError("the caches do not match the config (" + "; ".join(problems) + "); rerun `tj encode` / "
                              "`tj-extract run` into new cache paths, or point the config at the caches it describes")


def check_entries(cfg: PipelineConfig, refs: list, jepa: CacheReader, vlm: CacheReader | None = None,
                  *, allow_stale: bool = False) -> set[str]:
    """Refuse entries whose fingerprint is not what encoding / extracting them now would give
    (other settings, another prompt, or an episode edited since): training would learn from
    stale latents or guidance. ``allow_stale`` (``tj run --allow-partial``, while shards of a
    changed stage are pending): return the stale keys instead, for the caller to leave out."""
    from thinkjepa.data.content import episode_or_placeholder, for_workdir
    from thinkjepa.extract.encode import encode_stage_fingerprint, jepa_entry_fingerprint

    content = for_workdir(cfg.workdir)
    stage = encode_stage_fingerprint(cfg.encoder)
    want = {ref.key: jepa_entry_fingerprint(cfg.encoder, ref.window,
                                            episode_or_placeholder(content, ref.video_path, ref.annotation_path), stage)
            for ref in refs}
    content.save()
    stale = _refuse_stale(jepa, want, "JEPA", "encoded", "tj encode", allow_stale)
    if vlm is not None:
        from thinkjepa.extract.runner import fingerprint_of, plan_clips

        used = set(want)
        stale |= _refuse_stale(vlm, {it.key: fingerprint_of(cfg, it) for p in plan_clips(cfg) for it in p.items
                                     if it.key in used}, "VLM", "extracted", "tj-extract run", allow_stale)
    return stale


def _refuse_stale(reader: CacheReader, want: dict[str, str], name: str, verb: str, redo: str,
                  allow_stale: bool) -> set[str]:
    recs = {rec["key"]: rec["fingerprint"] for rec in reader.records()}
    stale = sorted(k for k, fp in want.items() if k in recs and recs[k] != fp)
    if stale and not allow_stale:
        raise StaleInputError(f"{len(stale)} of {len(want)} windows in the {name} cache {reader.url} are stale "
                              f"({verb} with other settings or from an episode edited since; first: "
                              f"{', '.join(stale[:3])}); rerun `{redo}` to redo exactly them")
    return set(stale)


def _row_brief(row: dict) -> dict[str, str]:
    """A manifest row without where its files lie (their content is in the entries'
    fingerprints): a workdir copied or mounted elsewhere keeps its training-data brief."""
    return {k: str(v) for k, v in sorted(row.items()) if k not in ("video_path", "annotation_path")}


def _manifest_brief(table: Any) -> str:
    """The digest of a manifest table's rows without where their files lie (``_row_brief``),
    in clip order, from whole columns: per-row Python took 1.3 s of a cold `tj status` at 100k
    episodes."""
    names = sorted(c for c in table.column_names if c not in ("video_path", "annotation_path"))
    table = table.select(names).sort_by("clip_id")
    h = hashlib.sha256()
    for name in names:
        h.update(json.dumps([name, table.column(name).to_pylist()]).encode())
    return h.hexdigest()[:16]


def training_data(cfg: PipelineConfig, readers: dict[str, CacheReader | None] | None = None) -> dict[str, str]:
    """A brief of the data every training run of ``cfg`` reads, cheap enough for ``tj status``:
    the manifest rows of the train and val splits and the identity (fingerprint and
    generation) of each cache entry of their clips. An edited episode, once re-encoded or
    re-extracted, changes it (its entries get a new generation and fingerprint).
    ``readers``: ``{"jepa": ..., "vlm": ...}`` already open (the trainer's), else opened here."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from thinkjepa.cache_schema import store_exists
    from thinkjepa.data.manifest import read_manifest
    from thinkjepa.provenance import digest as sha

    path = cfg.path(cfg.data.manifest)
    if not path.exists():
        return {"manifest": "missing"}
    try:
        table = read_manifest(path)
    except ValueError:  # torn or hand-edited: index is stale (its stamp knows the file) and says why
        return {"manifest": "unreadable"}
    table = table.filter(pc.is_in(table.column("split"), value_set=pa.array(["train", "val"])))
    clips = table.column("clip_id")
    out = {"manifest": _manifest_brief(table)}
    for name, url in (("jepa", cfg.url(cfg.encoder.cache)), ("vlm", cfg.url(cfg.thinker.cache))):
        reader = (readers or {}).get(name)
        if reader is None and not store_exists(url):
            out[name] = "missing"
            continue
        reader = reader or CacheReader(url)
        # entry identities from the parts' catalogs, in columns: reading every commit record
        # was most of a cold `tj status` at 100k episodes, and a dict per entry most of the rest
        ids = reader.entry_identity_table()
        ids = ids.filter(pc.is_in(pc.struct_field(pc.extract_regex(ids.column("key"), r"^(?P<clip>[^@]*)"), [0]),
                                  value_set=clips.combine_chunks()))
        generation = pc.struct_field(pc.extract_regex(ids.column("path"), r"(?P<gen>[^.]*)$"), [0])
        ident = pc.binary_join_element_wise(ids.column("fingerprint"), generation, "@")
        out[name] = sha([ids.column("key").to_pylist(), ident.to_pylist()])
    return out


def run_inputs(cfg: PipelineConfig, window_ids: dict[str, list[str]], readers: dict[str, CacheReader],
               episodes: dict[str, tuple[str, str]] | None = None) -> dict:
    """Manifest digest, store ids, per-window entry identity (fingerprint + generation) in each
    cache (``readers``: name -> open reader), the windows of each split, and the content fingerprint of every episode used
    (``episodes``: clip id -> (video, annotation); the targets come from the HDF5)."""
    from thinkjepa.data.content import episode_or_placeholder, for_workdir
    from thinkjepa.data.manifest import read_manifest

    manifest = cfg.path(cfg.data.manifest)
    used = sorted({k for ids in window_ids.values() for k in ids})
    entries: dict[str, dict[str, str]] = {}
    for name, r in readers.items():
        recs = {rec["key"]: rec for rec in r.records()}
        entries[name] = {k: f"{recs[k]['fingerprint']}@{recs[k]['path'].rsplit('.', 1)[-1]}"
                         for k in used if k in recs}
    content = for_workdir(cfg.workdir)
    eps = {c: episode_or_placeholder(content, v, a) for c, (v, a) in sorted((episodes or {}).items())}
    content.save()
    table = read_manifest(manifest)
    rows = table.to_pylist() if hasattr(table, "to_pylist") else table.to_dict("records")
    return {
        "manifest": hashlib.sha256(manifest.read_bytes()).hexdigest()[:16],
        "manifest_rows": {str(r["clip_id"]): _sha(_row_brief(r)) for r in rows},
        "stores": {name: store_id(r) for name, r in readers.items()},
        "entries": entries,
        "windows": {s: list(ids) for s, ids in window_ids.items()},
        "episodes": eps,
    }


def digest(inputs: dict) -> dict[str, str]:
    """Small form for checkpoints: one hash per component."""
    return {
        "manifest": inputs["manifest"],
        "stores": _sha(inputs["stores"]),
        "entries": _sha(inputs["entries"]),
        "windows": _sha(inputs["windows"]),
        "episodes": _sha(inputs["episodes"]),
    }


def save_inputs(run_dir: Path, inputs: dict) -> None:
    from thinkjepa.cache_schema.fsio import atomic_write_json

    atomic_write_json(Path(run_dir) / INPUTS_FILE, inputs, indent=None)


def load_inputs(run_dir: Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / INPUTS_FILE).read_text())
    except (OSError, ValueError):
        return None


def _keys_diff(what: str, old: dict[str, str], new: dict[str, str]) -> list[str]:
    out = []
    changed = sorted(k for k in old.keys() & new.keys() if old[k] != new[k])
    added, removed = sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
    for label, keys in (("rewritten", changed), ("added", added), ("gone", removed)):
        if keys:
            out.append(f"{what}: {len(keys)} {label} (first: {', '.join(keys[:3])})")
    return out


def describe_changes(old_digest: dict | None, new_digest: dict, old: dict | None, new: dict) -> list[str]:
    """Human-readable list of what differs; empty when nothing does."""
    if old_digest == new_digest:
        return []
    if old_digest is None:
        return ["the checkpoint records no inputs (made by an older version)"]
    if old is None or digest(old) != old_digest:  # no matching inputs.json: only components can be named
        return [f"{k} changed" for k in new_digest if old_digest.get(k) != new_digest[k]]
    out = []
    if old["manifest"] != new["manifest"]:
        rows = _keys_diff("manifest clips", old.get("manifest_rows", {}), new.get("manifest_rows", {}))
        out += rows or [f"manifest {old['manifest']} -> {new['manifest']}"]
    for name in sorted(set(old["stores"]) | set(new["stores"])):
        if old["stores"].get(name) != new["stores"].get(name):
            out.append(f"{name.upper()} cache replaced: {old['stores'].get(name)} -> {new['stores'].get(name)}")
    for name in sorted(set(old["entries"]) | set(new["entries"])):
        out += _keys_diff(f"{name.upper()} cache entries", old["entries"].get(name, {}), new["entries"].get(name, {}))
    out += _keys_diff("episodes (content)", old.get("episodes", {}), new.get("episodes", {}))
    for split in sorted(set(old["windows"]) | set(new["windows"])):
        a, b = old["windows"].get(split, []), new["windows"].get(split, [])
        if a != b:
            out += _keys_diff(f"{split} windows", dict.fromkeys(a, ""), dict.fromkeys(b, "")) or [
                f"{split} windows reordered"]
    return out or [f"{k} changed" for k in new_digest if old_digest.get(k) != new_digest[k]]


# Settings that do not change the weights a run produces: changing them keeps a run resumable.
_NEUTRAL_TRAIN_KEYS = ("out", "num_workers", "checkpoint_every", "cache_samples", "num_threads", "seeds",
                       "dist_timeout_s", "log_with")


def run_fingerprint(cfg: PipelineConfig, variant: str, guidance: str) -> str:
    """What a run's weights depend on; ``last.pt`` is resumed only under the same fingerprint."""
    train = {k: v for k, v in cfg.train.model_dump(mode="json").items() if k not in _NEUTRAL_TRAIN_KEYS}
    payload = {
        "variant": variant,
        "guidance": guidance,
        "train": train,
        "sections": cfg.section_fingerprint("model", "sampling", "encoder", "thinker", "data"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class TrainInputs:
    """What one training run reads, opened once: both caches (checked against the config once),
    the train and val datasets over them, the run's inputs record (``record``, see
    ``run_inputs``) and the training-data brief (``data``, see ``training_data``). Train and
    val only: the test split is never built here, so it cannot leak into model selection.

    ``allow_stale``: leave out windows whose cache entries are stale (with a warning) instead
    of refusing (``tj run --allow-partial`` while shards of a changed stage are pending)."""

    def __init__(self, cfg: PipelineConfig, guidance: str, *, allow_stale: bool = False) -> None:
        from thinkjepa.train.dataset import WindowDataset

        self.jepa = CacheReader(cfg.url(cfg.encoder.cache))
        self.vlm = CacheReader(cfg.url(cfg.thinker.cache)) if guidance != "none" else None
        check_caches(cfg, self.jepa, self.vlm)
        readers = (self.jepa, self.vlm)

        def dataset(split: str, windows: list | None = None) -> WindowDataset:
            return WindowDataset(cfg, split, guidance=guidance, memoize=cfg.train.cache_samples, windows=windows,
                                 readers=readers, target_steps=cfg.train.rollout_steps)

        train, val = dataset("train"), None
        try:
            val = dataset("val")
        except ValueError as e:
            warnings.warn(f"no validation ({e}); best.pt will not be written", stacklevel=3)
        if val is not None and val.dims != train.dims:
            raise ValueError(f"val windows have shapes {val.dims}, train windows {train.dims}")
        refs = [*train.refs, *(val.refs if val else [])]
        stale = check_entries(cfg, refs, self.jepa, self.vlm, allow_stale=allow_stale)
        if stale:
            warnings.warn(f"--allow-partial: {len(stale)} of {len(refs)} windows are stale in the caches (their shards "
                          f"are pending) and are left out (first: {sorted(stale)[:3]})", stacklevel=3)
            keep = [r for r in train.refs if r.key not in stale]
            if not keep:
                raise StaleInputError("--allow-partial: every train window is stale; run the pending shards first")
            train = dataset("train", keep)
            keep = [r for r in val.refs if r.key not in stale] if val is not None else []
            val = dataset("val", keep) if keep else None
            refs = [*train.refs, *(val.refs if val else [])]
        self.train, self.val = train, val
        ids = {"train": train.window_ids, "val": val.window_ids if val else []}
        episodes = {r.window.clip_id: (r.video_path, r.annotation_path) for r in refs}
        open_readers = {"jepa": self.jepa, **({"vlm": self.vlm} if self.vlm is not None else {})}
        self.record = run_inputs(cfg, ids, open_readers, episodes)
        self.data = training_data(cfg, open_readers)

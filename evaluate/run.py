"""``run_eval``: every trained variant (every seed), the baselines and the test-time guidance
ablations on one window set, aggregated into the summary that ``metrics.json`` holds.

Flow: ``common_window_set`` fixes the windows (identical for every row, or an error naming
the window and variant); targets and baselines come from the episodes; each checkpoint runs
once over the set (one-shot, rollouts in every ``eval.rollout_modes``, latent statistics);
``thinkjepa`` runs again with its guidance ablated. Aggregation is mean +- std over seeds and a
paired bootstrap over windows (per-window values averaged over seeds) against ``jepa_only``,
and, with 2 or more training seeds, an interval over seeds (``vs_jepa_only_seeds``: the paired t
interval of per-seed differences, with the two-level seed-and-window bootstrap beside it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from thinkjepa.config import PipelineConfig
from thinkjepa.evaluate.ablations import GuidanceSwap, same_clip_sources, shuffled_sources
from thinkjepa.evaluate.errors import by_frame, by_group, by_step, by_task, per_window, scores
from thinkjepa.evaluate.predict import ModelRun, Rollout, find_runs, gates_of, load_run, run_model, variant_dataset
from thinkjepa.evaluate.stats import comparison, mean_std, seed_comparison, window_digest
from thinkjepa.evaluate.windows import (
    Episodes,
    baseline_predictions,
    common_window_set,
    rollout_frames,
    rollout_steps_available,
    targets_for,
)

REFERENCE = "jepa_only"
MATCHED = "jepa_matched"
"""The capacity-matched JEPA-only baseline (thinkjepa's modules and trainable parameters, fed a
constant instead of guidance)."""
REFERENCES = (MATCHED, REFERENCE)
"""Baselines a guided model is compared against, in order of preference: the report's verdict
uses the first one evaluated (a capacity-matched JEPA-only model, else plain jepa_only)."""
GUIDED = "thinkjepa"
BASELINES = ("last_observed", "constant_velocity")


def _encoded_future(cfg: PipelineConfig, refs, rows: list[int], steps: int) -> dict[int, list[np.ndarray | None]]:
    """The encoder's latents of each rollout step, where a cached window's future is exactly
    that step's frames (step 0: the window's own future)."""
    from thinkjepa.cache_schema import CacheReader
    from thinkjepa.train.dataset import split_windows

    reader = CacheReader(cfg.url(cfg.encoder.cache))
    have = set(reader.keys())
    by_key = {r.key: r for r in split_windows(cfg, cfg.eval.split)}
    out: dict[int, list[np.ndarray | None]] = {}
    for i in rows:
        w = refs[i].window
        lat: list[np.ndarray | None] = []
        for k, frames in enumerate(rollout_frames(w, steps)):
            key = f"{w.clip_id}@{frames[0]}" if k else w.window_id
            other = by_key.get(key)
            ok = key in have and other is not None and other.window.future == frames
            lat.append(np.asarray(reader.read_jepa(key)[1], np.float32) if ok else None)
        out[i] = lat
    return out


def _agg(values: list[dict[str, float]], keys=("ADE", "FDE", "Acc")) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in keys:
        out[k], out[f"{k}_std"] = mean_std([v[k] for v in values])
    return out


def _agg_curves(curves: list[list[float]]) -> tuple[list[float], list[float]]:
    a = np.asarray(curves, np.float64)
    return a.mean(0).tolist(), (a.std(0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1])).tolist()


def _latent_mean(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Latent summaries of one step over seeds: numeric fields averaged, flag if any seed flags."""
    out: dict[str, Any] = {}
    for k in steps[0]:
        vals = [s[k] for s in steps]
        if k == "flag":
            out[k] = any(vals)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in vals) and len(set(vals)) == 1:
            out[k] = vals[0]
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out[k] = float(np.mean(vals))
        else:
            out[k] = vals[0]
    return out


def summarize_model(runs: list[ModelRun], thr: float, frames: int, kind: str) -> dict[str, Any]:
    """The metrics.json entry of one model row (seeds aggregated)."""
    ids = runs[0].window_ids
    per_seed = {str(r.seed if r.seed is not None else "-"): scores(r.err, thr) for r in runs}
    curve, curve_std = _agg_curves([by_frame(r.err) for r in runs])
    pw_seed = {str(r.seed if r.seed is not None else "-"): per_window(r.err, thr)["ADE"] for r in runs}
    fde_seed = {str(r.seed if r.seed is not None else "-"): per_window(r.err, thr)["FDE"] for r in runs}
    pw = np.mean(list(pw_seed.values()), axis=0)
    s: dict[str, Any] = {
        "model": runs[0].name,
        "kind": kind,
        "trainable_params": runs[0].trainable_params,
        "windows": len(ids),
        "window_digest": window_digest(ids),
        "seeds": [r.seed for r in runs if r.seed is not None],
        "per_seed": per_seed,
        **_agg(list(per_seed.values())),
        "ADE_by_step": curve,
        "ADE_by_step_std": curve_std,
        "by_joint_group": {g: _agg([by_group(r.err, thr)[g] for r in runs]) for g in by_group(runs[0].err, thr)},
        "by_task": {},
        "per_window_ADE": {w: float(x) for w, x in zip(ids, pw)},
        "per_seed_window_ADE": {sd: [float(x) for x in v] for sd, v in pw_seed.items()},
        "per_seed_window_FDE": {sd: [float(x) for x in v] for sd, v in fde_seed.items()},
    }
    tasks = [by_task(r.err, ids, thr) for r in runs]
    for t in tasks[0]:
        s["by_task"][t] = {**_agg([x[t] for x in tasks]), "windows": tasks[0][t]["windows"]}
    if runs[0].latent is not None:
        s["latent"] = _latent_mean([r.latent.summary() for r in runs])
    s["rollout"] = {}
    for mode in runs[0].rollouts:
        ro: list[Rollout] = [r.rollouts[mode] for r in runs]
        steps = ro[0].err.shape[1] // frames
        per_step = []
        for k in range(steps):
            entry = {"step": k + 1, **_agg([by_step(x.err, frames, thr)[k] for x in ro])}
            if ro[0].latent:
                entry["latent"] = _latent_mean([x.latent[k].summary(reference=x.latent[0]) for x in ro])
            per_step.append(entry)
        rcurve, rcurve_std = _agg_curves([by_frame(x.err) for x in ro])
        rpw = np.mean([x.err.mean(axis=(1, 2)) for x in ro], axis=0)
        by_window_step = {}
        for r, x in zip(runs, ro):
            e = x.err.reshape(x.err.shape[0], steps, frames, x.err.shape[-1])
            by_window_step[str(r.seed if r.seed is not None else "-")] = {
                "ADE": e.mean(axis=(2, 3)).tolist(), "FDE": e[:, :, -1].mean(axis=2).tolist()}
        s["rollout"][mode] = {
            "steps": steps,
            "windows": int(ro[0].err.shape[0]),
            **_agg([scores(x.err, thr) for x in ro]),
            "per_step": per_step,
            "ADE_by_frame": rcurve,
            "ADE_by_frame_std": rcurve_std,
            "per_window_ADE": rpw.tolist(),
            "per_seed_window_step": by_window_step,
        }
    return s


def evaluate_all(cfg: PipelineConfig, progress=None, saved: Mapping[str, Mapping[int, Any]] | None = None) -> dict[str, Any]:
    """Run every checkpoint, baseline and ablation; the summary (without report paths).
    ``saved``: {variant: {seed: saved model folder}} used instead of the training runs.
    The models run on ``train.num_threads`` threads, as they trained."""
    from thinkjepa.train.threads import torch_threads

    with torch_threads(cfg.train.num_threads):
        return _evaluate_all(cfg, progress, saved)


def _evaluate_all(cfg: PipelineConfig, progress, saved: Mapping[str, Mapping[int, Any]] | None) -> dict[str, Any]:
    ec = cfg.eval
    thr, split = ec.acc_threshold_m, ec.split
    notes: list[str] = []
    variants = list(dict.fromkeys(ec.variants))
    refs = common_window_set(cfg, variants, split)
    ids = [r.key for r in refs]
    episodes = Episodes()
    targets = np.stack([targets_for(episodes.get(r), r.window, r.window.future) for r in refs])
    frames = targets.shape[1]

    avail = rollout_steps_available(refs, episodes, ec.rollout_steps)
    steps = max(avail.values())
    rows = [i for i, r in enumerate(refs) if avail[r.key] >= steps]
    if steps < ec.rollout_steps:
        notes.append(
            f"Rollout: {ec.rollout_steps} steps were asked for, but no window of split {split!r} has "
            f"{ec.rollout_steps} x {frames} future frames left in its episode; {steps} step(s) reported "
            f"(on the {len(rows)} windows that allow them)."
        )
    if steps == 1:
        notes.append("Rollout with 1 step equals the one-shot forecast: the episodes are too short for a longer horizon.")
    roll_ids = [ids[i] for i in rows]
    roll_targets = np.stack([
        np.concatenate([targets_for(episodes.get(refs[i]), refs[i].window, fr) for fr in rollout_frames(refs[i].window, steps)])
        for i in rows
    ])
    encoded = _encoded_future(cfg, refs, rows, steps)
    enc_rows = [encoded.get(i) for i in range(len(refs))]

    runs: dict[str, list[ModelRun]] = {}
    kinds: dict[str, str] = {}
    checkpoints: dict[str, dict[str, Any]] = {}
    gates: dict[str, dict[str, list[float] | None]] = {}
    seeds: dict[str, list[int]] = {}
    for v in variants:
        ds = variant_dataset(cfg, v, split, refs)
        found = dict((saved or {}).get(v) or find_runs(cfg, v))
        for seed, run_dir in found.items():
            refuse_trained_windows(run_dir, v, seed, ids, split)
        seeds[v] = list(found)
        kinds[v] = "training_ablation" if v in cfg.variants else "variant"
        for seed, run_dir in found.items():
            if progress:
                progress(f"{v} seed {seed}")
            model, info = load_run(run_dir)
            modes = list(ec.rollout_modes)
            same = model.predictor.n_future == model.predictor.n_past
            note = ("Rollout modes 'shifted' and 'predicted' coincide here: the model predicts as many tubelets "
                    "as it observes, so the shifted window is the predicted tubelets.")
            if same and len(modes) > 1 and note not in notes:
                notes.append(note)
            mr = run_model(model, ds, ids, targets, batch_size=cfg.train.batch_size, rollout={m: steps for m in modes},
                           rollout_rows=rows, rollout_targets=roll_targets, encoded_future=enc_rows,
                           keep_pred=v in (GUIDED, *REFERENCES) and seed == seeds[v][0], name=v, seed=seed)
            mr.checkpoint = info
            runs.setdefault(v, []).append(mr)
            checkpoints.setdefault(v, {})[str(seed)] = info
            gates.setdefault(v, {})[str(seed)] = gates_of(model)
            if v == GUIDED and model.mode != "none":
                _guidance_ablations(cfg, model, ds, ids, targets, seed, runs, kinds, notes)

    for name in BASELINES:
        kinds[name] = "baseline"
    base_err = {n: [] for n in BASELINES}
    base_roll = {n: [] for n in BASELINES}
    from thinkjepa.evaluate.errors import joint_errors

    for i, r in enumerate(refs):
        ep = episodes.get(r)
        one = baseline_predictions(ep, r.window, r.window.future)
        for n in BASELINES:
            base_err[n].append(joint_errors(one[n][None], targets[i : i + 1])[0])
    for j, i in enumerate(rows):
        r = refs[i]
        fr = tuple(f for block in rollout_frames(r.window, steps) for f in block)
        pred = baseline_predictions(episodes.get(r), r.window, fr)
        for n in BASELINES:
            base_roll[n].append(joint_errors(pred[n][None], roll_targets[j : j + 1])[0])
    modes_run = sorted({m for rs in runs.values() for r in rs for m in r.rollouts}, key=list(ec.rollout_modes).index)
    for n in BASELINES:
        err_r = np.stack(base_roll[n])
        runs[n] = [ModelRun(n, None, ids, np.stack(base_err[n]), latent=None,
                            rollouts={m: Rollout(err_r, []) for m in modes_run}, trainable_params=0)]

    models = {name: summarize_model(rs, thr, frames, kinds[name]) for name, rs in runs.items()}
    _check_same_windows(models, ids)
    _compare(models, ec.bootstrap)
    return {
        "split": split,
        "window_set": {"digest": window_digest(ids), "windows": len(ids), "ids": ids},
        "rollout_window_set": {"digest": window_digest(roll_ids), "windows": len(roll_ids), "steps": steps,
                               "requested_steps": ec.rollout_steps, "frames_per_step": frames, "modes": modes_run,
                               "ids": roll_ids},
        "acc_threshold_m": thr,
        "seeds": seeds,
        "checkpoints": checkpoints,
        "gates": gates,
        "models": models,
        "reference": reference_of(models),
        "notes": notes,
        "_runs": runs,
        "_refs": refs,
        "_episodes": episodes,
        "_targets": targets,
    }


class TrainedOnEvalWindows(ValueError):
    """A checkpoint trained on a window the eval split scores: its numbers would be train error."""


def refuse_trained_windows(run_dir, variant: str, seed: int, ids: list[str], split: str) -> None:
    """Refuse to score ``split`` windows that the run trained on (its ``windows.json`` lists
    them): the manifest's splits changed since training, or the run used another manifest."""
    import json
    from pathlib import Path

    listed = Path(run_dir) / "windows.json"
    if not listed.is_file():
        return  # runs from before windows.json; the checkpoint's fingerprint check still applies
    try:
        trained = set(json.loads(listed.read_text()).get("train", []))
    except (ValueError, AttributeError) as e:
        raise TrainedOnEvalWindows(f"{listed}: unreadable ({e}); retrain variant {variant!r} seed {seed}") from e
    both = [w for w in ids if w in trained]
    if both:
        shown = ", ".join(both[:5]) + (f" and {len(both) - 5} more" if len(both) > 5 else "")
        raise TrainedOnEvalWindows(
            f"variant {variant!r} seed {seed} trained on {len(both)} window(s) of the {split} split ({shown}; "
            f"{listed}): the manifest's splits changed since it trained; retrain it "
            f"(`tj-train --variant {variant} --seed {seed}`) or evaluate with the manifest it trained on")


def _guidance_ablations(cfg, model, ds, ids, targets, seed, runs, kinds, notes) -> None:
    bs = cfg.train.batch_size
    name = f"{GUIDED}:zeroed"
    kinds[name] = "test_ablation"
    runs.setdefault(name, []).append(run_model(model, GuidanceSwap(ds, "zeroed"), ids, targets, batch_size=bs, name=name, seed=seed))
    name = f"{GUIDED}:shuffled"
    if len(ids) >= 2:
        kinds[name] = "test_ablation"
        swap = GuidanceSwap(ds, "shuffled", sources=shuffled_sources(len(ids), seed=seed))
        runs.setdefault(name, []).append(run_model(model, swap, ids, targets, batch_size=bs, name=name, seed=seed))
    elif seed == cfg.train.seeds[0]:
        notes.append("Shuffled-guidance ablation needs at least two windows; left out.")
    src = same_clip_sources(ids)
    name = f"{GUIDED}:same_clip"
    if src:
        kinds[name] = "test_ablation"
        idx = sorted(src)
        swap = GuidanceSwap(ds, "same_clip", sources=[src[i] for i in idx], indices=idx)
        runs.setdefault(name, []).append(run_model(model, swap, [ids[i] for i in idx], targets[idx], batch_size=bs, name=name, seed=seed))
        if len(idx) < len(ids) and seed == cfg.train.seeds[0]:
            notes.append(f"Same-clip guidance ablation: {len(ids) - len(idx)} windows are the only window of their clip and are left out of that row ({len(idx)} scored).")
    elif seed == cfg.train.seeds[0]:
        notes.append("Same-clip guidance ablation not available: every clip has a single window in this split (raise sampling.windows_per_clip).")


def _check_same_windows(models: dict[str, dict[str, Any]], ids: list[str]) -> None:
    digest = window_digest(ids)
    for name, m in models.items():
        if m["kind"] != "test_ablation" and m["window_digest"] != digest:
            raise RuntimeError(f"model row {name!r} was scored on other windows than the common set")


def reference_of(models: Mapping[str, Any]) -> str | None:
    """The reference row of a summary's models: the first of ``REFERENCES`` present."""
    return next((r for r in REFERENCES if r in models), None)


def _over_steps(rollout: Mapping[str, Any]) -> dict[str, list[float]]:
    """Per seed, each window's rollout ADE averaged over the steps: the unit of the rollout's
    window interval, so the two intervals describe the same difference."""
    return {s: np.asarray(v["ADE"], np.float64).mean(axis=1).tolist() for s, v in rollout["per_seed_window_step"].items()}


def _compare(models: dict[str, dict[str, Any]], n_boot: int) -> None:
    """Against every reference row present (``vs_<ref>``): the interval over windows of
    per-window ADE (seed means), the interval over training seeds where both rows have 2 or more
    seeds in common (a baseline pairs with every seed), and the rollouts' window intervals; and
    each test-time ablation vs thinkjepa on the ablation's windows."""
    for ref_name in (r for r in REFERENCES if r in models):
        ref = models[ref_name]
        for name, m in models.items():
            if name == ref_name or m["kind"] == "test_ablation":
                continue
            m[f"vs_{ref_name}"] = comparison(m["per_window_ADE"], ref["per_window_ADE"], n_boot)
            over_seeds = seed_comparison(m["per_seed_window_ADE"], ref["per_seed_window_ADE"], n_boot)
            if over_seeds is not None:
                m[f"vs_{ref_name}_seeds"] = over_seeds
            m[f"rollout_vs_{ref_name}"], m[f"rollout_vs_{ref_name}_seeds"] = {}, {}
            for mode, ro in m["rollout"].items():
                if mode in ref["rollout"]:
                    a = dict(enumerate(ro["per_window_ADE"]))
                    b = dict(enumerate(ref["rollout"][mode]["per_window_ADE"]))
                    m[f"rollout_vs_{ref_name}"][mode] = comparison(a, b, n_boot)
                    over = seed_comparison(_over_steps(ro), _over_steps(ref["rollout"][mode]), n_boot)
                    if over is not None:
                        m[f"rollout_vs_{ref_name}_seeds"][mode] = over
    for m in models.values():
        if m["kind"] == "test_ablation" and GUIDED in models:
            full = models[GUIDED]["per_window_ADE"]
            m["vs_thinkjepa"] = comparison(m["per_window_ADE"], {w: full[w] for w in m["per_window_ADE"]}, n_boot)


def public(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without its in-memory parts (what metrics.json and ``--json`` hold)."""
    return {k: v for k, v in summary.items() if not k.startswith("_")}


__all__ = ["BASELINES", "GUIDED", "MATCHED", "REFERENCE", "REFERENCES", "TrainedOnEvalWindows", "evaluate_all", "public",
           "reference_of", "refuse_trained_windows",
           "summarize_model"]

"""Rollout benchmark v3: does thinker guidance make long-horizon rollout better, and only where
the cue tells something? Judged by the criteria fixed in ``benchmarks/criteria.yaml``.

For each generator seed and data mode (``cued``, ``shuffled``, ``absent``) it synthesises
rollout benchmark v3 (thinkjepa/data/synth_v3.py: a turn in rollout steps 2-4 selected by a cue
only the thinker sees) and runs the real pipeline through ``bench_guidance.run_mode`` (index,
vLLM extraction with the tiny random Qwen3-VL Thinking, V-JEPA2 encode, training of every
variant for every training seed, ``tj-eval``). From ``metrics.json`` it reads the rollout ADE of
every (training seed, test window, rollout step) in both rollout modes and judges each criterion
of ``criteria.yaml``:

- a seed interval: paired Student t over training seeds (``scipy.stats.ttest_rel``);
- a scene interval: a percentile bootstrap that resamples whole test scenes
  (``scipy.stats.bootstrap``, paired), never single windows;
- ratios of means, and equivalence (E1) as the 90% intervals inside +-margin.

It prints one table (mean ± std over training seeds per step, intervals, PASS/FAIL per
criterion and generator seed) and writes a JSON that keeps the per-seed, per-window, per-step
values, so every criterion can be recomputed from it (``--rejudge FILE`` does exactly that).

    uv run --extra cpu python benchmarks/bench_rollout.py --dev         # development seed(s) only
    uv run --extra cpu python benchmarks/bench_rollout.py               # the judged seeds
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CRITERIA = REPO / "benchmarks" / "criteria.yaml"
BASELINES = ("last_observed", "constant_velocity")


def _bench_guidance():
    """bench_guidance's machinery (one home: this script does not copy it)."""
    spec = importlib.util.spec_from_file_location("bench_guidance", REPO / "benchmarks" / "bench_guidance.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_criteria(path: Path = CRITERIA) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text())


def overrides(size: dict[str, Any]) -> list[str]:
    """Dotted overrides of the demo defaults that lay out rollout v3 at ``size``."""
    F = size["future_frames"]
    return [
        "demo.generator=rollout_v3", f"demo.n_frames={size['n_frames']}",
        f"sampling.past_frames={size['past_frames']}", f"sampling.future_frames={F}",
        f"sampling.windows_per_clip={size['windows_per_clip']}", f"sampling.window_hop={F}",
        f"sampling.horizon_steps={size['rollout_steps']}", f"eval.rollout_steps={size['rollout_steps']}",
        f"train.max_steps={size['max_steps']}", f"train.val_every_steps={size['val_every_steps']}",
        # the criteria files written before the rollout loss mean the one-step loss; the demo
        # default moved to 4 steps after them, so a file that wants the rollout loss says so in set
        "train.rollout_steps=1",
        *size.get("set", []),
    ]


def variants_for(crit: dict[str, Any], mode: str, with_jepa_only: bool = False) -> list[str]:
    """The variants trained on the main pipeline of ``mode``. On cued data the fair vlm_only
    trains there too, unless ``size.vlm_only_set`` gives it other settings (then it runs in a
    pipeline of its own on the same data). The old jepa_only is judged by nothing: it runs
    only when asked (it costs 3 trainings)."""
    v = crit["variants"]
    extra = [v["jepa_only"]] if with_jepa_only and mode == "cued" else []
    if mode == "cued" and not crit["size"].get("vlm_only_set"):
        extra.append(v["vlm_only"])
    return [v["thinkjepa"], v["matched"], *extra]


# ---------------------------------------------------------------- reading metrics.json


def rollout_cube(model: dict[str, Any], rollout_mode: str) -> dict[str, Any]:
    """``{"seeds": [...], "ADE": [S][W][K]}``: rollout ADE of every training seed, rollout
    window and step of one model row (a baseline has the one seed ``"-"``)."""
    by_seed = model["rollout"][rollout_mode]["per_seed_window_step"]
    seeds = list(by_seed)
    return {"seeds": seeds, "ADE": [by_seed[s]["ADE"] for s in seeds]}


def collect(metrics: dict[str, Any], names: list[str], rollout_modes: list[str]) -> dict[str, Any]:
    """What the criteria need from one run: window ids and, per model and rollout mode, the cube."""
    rw = metrics["rollout_window_set"]
    ids = rw.get("ids") or metrics["window_set"]["ids"]
    models = metrics["models"]
    out: dict[str, Any] = {"windows": list(ids), "steps": rw["steps"], "models": {}}
    for name in [*names, *BASELINES]:
        if name in models:
            out["models"][name] = {m: rollout_cube(models[name], m) for m in rollout_modes if m in models[name]["rollout"]}
            out["models"][name]["one_shot_ADE"] = {s: v["ADE"] for s, v in (models[name].get("per_seed") or {}).items()}
    return out


# ---------------------------------------------------------------- statistics


def scene_of(window_id: str) -> str:
    return window_id.split("/", 1)[0]


def seed_interval(a: np.ndarray, b: np.ndarray, level: float) -> dict[str, float]:
    """Paired t interval over training seeds of the per-seed mean difference ``a - b``.
    ``a``, ``b``: [S, W] values (one row per seed; a baseline repeats its one row)."""
    from scipy import stats

    xa, xb = a.mean(axis=1), b.mean(axis=1)
    d = xa - xb
    if d.size < 2:
        return {"mean": float(d.mean()), "lo": float("nan"), "hi": float("nan"), "n": int(d.size)}
    if np.ptp(d) == 0:  # no spread: the t interval degenerates to the point
        return {"mean": float(d.mean()), "lo": float(d[0]), "hi": float(d[0]), "n": int(d.size)}
    ci = stats.ttest_rel(xa, xb).confidence_interval(confidence_level=level)
    return {"mean": float(d.mean()), "lo": float(ci.low), "hi": float(ci.high), "n": int(d.size)}


def scene_interval(a: np.ndarray, b: np.ndarray, windows: list[str], level: float, n_resamples: int,
                   seed: int, method: str) -> dict[str, float]:
    """Scene-cluster bootstrap of the mean difference: per window the seed-averaged ``a - b``,
    summed per test scene; resampling scenes (paired sums and window counts) with replacement,
    the statistic is the window-weighted mean difference."""
    from scipy import stats

    d = (a - b).mean(axis=0)
    scenes = sorted({scene_of(w) for w in windows})
    idx = np.asarray([scenes.index(scene_of(w)) for w in windows])
    sums = np.bincount(idx, weights=d, minlength=len(scenes))
    counts = np.bincount(idx, minlength=len(scenes)).astype(np.float64)
    mean = float(sums.sum() / counts.sum())
    if len(scenes) < 2:
        return {"mean": mean, "lo": float("nan"), "hi": float("nan"), "scenes": len(scenes)}

    def stat(s, c, axis=-1):
        return s.sum(axis=axis) / c.sum(axis=axis)

    res = stats.bootstrap((sums, counts), stat, paired=True, vectorized=True, n_resamples=n_resamples,
                          confidence_level=level, method=method, rng=np.random.default_rng(seed))
    return {"mean": mean, "lo": float(res.confidence_interval.low), "hi": float(res.confidence_interval.high),
            "scenes": len(scenes)}


def _values(cube: dict[str, Any], spec: dict[str, Any], seeds: list[str]) -> np.ndarray:
    """[S, W] per-seed, per-window value of a criterion: the mean ADE over ``steps`` (1-based),
    or the growth ``ADE(step j) - ADE(step i)`` for ``growth: [i, j]``."""
    arr = np.asarray(cube["ADE"], np.float64)  # [S0, W, K]
    if cube["seeds"] == ["-"]:
        arr = np.repeat(arr, len(seeds), axis=0)
    else:
        arr = arr[[cube["seeds"].index(s) for s in seeds]]
    if "growth" in spec:
        i, j = spec["growth"]
        return arr[:, :, j - 1] - arr[:, :, i - 1]
    return arr[:, :, [k - 1 for k in spec["steps"]]].mean(axis=2)


def judge_one(run: dict[str, Any], spec: dict[str, Any], rollout_mode: str, crit: dict[str, Any]) -> dict[str, Any]:
    """One criterion on one run (generator seed, data mode) and one rollout mode."""
    names = crit["variants"]
    a_name, b_name = names.get(spec["a"], spec["a"]), names.get(spec["b"], spec["b"])
    models = run["models"]
    if a_name not in models or b_name not in models or rollout_mode not in models[a_name]:
        return {"pass": False, "detail": f"missing rows: {a_name} or {b_name} ({rollout_mode})"}
    ca, cb = models[a_name][rollout_mode], models[b_name][rollout_mode]
    seeds = ca["seeds"] if ca["seeds"] != ["-"] else cb["seeds"]
    A, B = _values(ca, spec, seeds), _values(cb, spec, seeds)
    st = crit["statistics"]
    level = spec["interval_level"]
    ivs = {
        "seed": seed_interval(A, B, level),
        "scene": scene_interval(A, B, run["windows"], level, st["bootstrap_resamples"], st["bootstrap_seed"],
                                st["bootstrap_method"]),
    }
    out: dict[str, Any] = {"a": a_name, "b": b_name, "a_mean": float(A.mean()), "b_mean": float(B.mean()),
                           "a_per_seed": A.mean(axis=1).tolist(), "b_per_seed": B.mean(axis=1).tolist(),
                           "diff": float((A - B).mean()), "level": level, "intervals": ivs}
    ok = True
    if "ratio_max" in spec:
        out["ratio"] = float(A.mean() / B.mean())
        ok &= out["ratio"] <= spec["ratio_max"]
    for kind in spec.get("intervals_exclude_zero", []):
        ok &= bool(ivs[kind]["hi"] < 0)  # NaN (too few seeds or scenes) fails
    if "equivalence_margin" in spec:
        m = spec["equivalence_margin"] * float(B.mean())
        out["margin"] = m
        for kind in spec["intervals_within_margin"]:
            ok &= bool(-m <= ivs[kind]["lo"] and ivs[kind]["hi"] <= m)
    out["pass"] = bool(ok)
    return out


def judge(runs: dict[str, dict[str, dict[str, Any]]], crit: dict[str, Any]) -> dict[str, Any]:
    """Every criterion on every generator seed: ``{name: {"pass", "by_seed": {gseed: {"pass",
    "cells": {"<data mode>/<rollout mode>": judge_one(...)}}}}}``. A criterion passes on a
    generator seed when it passes in every data mode and rollout mode it names, and passes
    overall when it passes on every generator seed that was run."""
    out: dict[str, Any] = {}
    for name, spec in crit["criteria"].items():
        data_modes = spec["data_mode"] if isinstance(spec["data_mode"], list) else [spec["data_mode"]]
        by_seed: dict[str, Any] = {}
        for gseed, by_mode in runs.items():
            cells = {}
            for dm in data_modes:
                if dm not in by_mode:
                    cells[f"{dm}/-"] = {"pass": False, "detail": f"data mode {dm} not run"}
                    continue
                for rm in crit["rollout_modes"]:
                    cells[f"{dm}/{rm}"] = judge_one(by_mode[dm], spec, rm, crit)
            by_seed[gseed] = {"pass": all(c["pass"] for c in cells.values()), "cells": cells}
        out[name] = {"text": spec["text"], "pass": bool(by_seed) and all(s["pass"] for s in by_seed.values()),
                     "by_seed": by_seed}
    return out


# ---------------------------------------------------------------- printing


def _ms(x: np.ndarray) -> str:
    return f"{x.mean():.4f}" + (f"±{x.std(ddof=1):.4f}" if x.size > 1 else "")


def print_table(runs: dict[str, dict[str, dict[str, Any]]], verdicts: dict[str, Any], crit: dict[str, Any]) -> None:
    for gseed, by_mode in runs.items():
        for dm, run in by_mode.items():
            for rm in crit["rollout_modes"]:
                print(f"\n== generator seed {gseed}, {dm}, rollout {rm}: ADE (m) per step, mean ± std over training seeds "
                      f"({len(run['windows'])} windows, {len({scene_of(w) for w in run['windows']})} test scenes)")
                print(f"{'model':18s} " + " ".join(f"{'step ' + str(k + 1):>15s}" for k in range(run["steps"]))
                      + f" {'steps 1-' + str(run['steps']):>15s} {'one-shot':>15s}")
                for name, m in run["models"].items():
                    if rm not in m:
                        continue
                    arr = np.asarray(m[rm]["ADE"], np.float64).mean(axis=1)  # [S, K]
                    one = np.asarray(list(m.get("one_shot_ADE", {}).values()), np.float64)
                    print(f"{name:18s} " + " ".join(f"{_ms(arr[:, k]):>15s}" for k in range(arr.shape[1]))
                          + f" {_ms(arr.mean(axis=1)):>15s} {_ms(one) if one.size else '':>15s}")
    print()
    for name, v in verdicts.items():
        print(f"{'PASS' if v['pass'] else 'FAIL'}  {name}: {v['text']}")
        for gseed, s in v["by_seed"].items():
            for cell, c in s["cells"].items():
                if "intervals" not in c:
                    print(f"      seed {gseed} {cell}: FAIL {c.get('detail', '')}")
                    continue
                si, sc = c["intervals"]["seed"], c["intervals"]["scene"]
                extra = f" ratio {c['ratio']:.3f}" if "ratio" in c else ""
                extra += f" margin ±{c['margin']:.4f}" if "margin" in c else ""
                print(f"      seed {gseed} {cell}: {'PASS' if c['pass'] else 'FAIL'} {c['a']} {c['a_mean']:.4f} vs "
                      f"{c['b']} {c['b_mean']:.4f}{extra}; diff {c['diff']:+.4f}, {int(100 * c['level'])}% seed "
                      f"[{si['lo']:+.4f}, {si['hi']:+.4f}], scene [{sc['lo']:+.4f}, {sc['hi']:+.4f}]")


# ---------------------------------------------------------------- running


def run_seed(gseed: int, modes: list[str], crit: dict[str, Any], workdir: Path, extra: list[str],
             with_jepa_only: bool = False, ablations: list[str] | None = None,
             on_mode: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every data mode of generator seed ``gseed``; ``on_mode(mode, run)`` after each, so a run cut
    short (a deadline, a crash) keeps the modes that finished."""
    bg = _bench_guidance()
    size = crit["size"]
    out: dict[str, Any] = {}
    for mode in modes:
        # training-time ablations (pipelines.yaml) train beside the others on cued data, judged by nothing
        abl = list(ablations or []) if mode == "cued" else []
        names = variants_for(crit, mode, with_jepa_only) + abl
        args = argparse.Namespace(
            seed=gseed, scenes=size["scenes"], episodes_per_scene=size["episodes_per_scene"],
            train_seeds=list(size["training_seeds"]), epochs=1, ablations=abl, set=[*overrides(size), *extra],
        )
        print(f"== generator seed {gseed}, {mode}: {size['scenes']} scenes x {size['episodes_per_scene']} episodes, "
              f"training seeds {size['training_seeds']}, variants {names}", flush=True)
        t0 = time.perf_counter()
        r = bg.run_mode(workdir / f"seed{gseed}", mode, args, variants=names)
        run = collect(r["metrics"], names, crit["rollout_modes"])
        if mode == "cued" and size.get("vlm_only_set"):
            # the fair VLM-only reads another thinker cache (its thinker sees up to t-1): its own
            # pipeline on the same data, scored on the same windows
            vlm = crit["variants"]["vlm_only"]
            args_v = argparse.Namespace(**{**vars(args), "set": [*args.set, *size.get("vlm_only_set", [])]})
            rv = bg.run_mode(workdir / f"seed{gseed}", mode, args_v, variants=[vlm], name=f"{mode}_{vlm}",
                             data=Path(r["workdir"]) / "data")
            other = collect(rv["metrics"], [vlm], crit["rollout_modes"])
            if other["windows"] != run["windows"]:
                raise RuntimeError(f"{vlm} was scored on other windows than the main run of seed {gseed}")
            run["models"][vlm] = other["models"][vlm]
            r["metrics"].setdefault("notes", []).extend(rv["metrics"].get("notes", []))
        run.update(seconds=time.perf_counter() - t0, workdir=r["workdir"], notes=r["metrics"].get("notes", []),
                   timeline=r["labels"]["timeline"],
                   trainable_params={n: m.get("trainable_params") for n, m in r["metrics"]["models"].items()})
        out[mode] = run
        print(f"   {mode}: {run['seconds']:.0f} s", flush=True)
        if on_mode is not None:
            on_mode(mode, run)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--criteria", type=Path, default=CRITERIA)
    ap.add_argument("--dev", action="store_true", help="run the development generator seed(s), never the judged ones")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="generator seeds (default: criteria's judged seeds)")
    ap.add_argument("--modes", nargs="+", default=None, help="data modes (default: the criteria's)")
    ap.add_argument("--set", action="append", default=[], help="extra dotted overrides (development only)")
    ap.add_argument("--with-jepa-only", action="store_true", help="also train the old jepa_only on cued data (a row, not judged)")
    ap.add_argument("--ablations", nargs="*", default=[],
                    help="training-time ablations of pipelines.yaml to train on cued data too (rows, not judged)")
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench_rollout"))
    ap.add_argument("--out", type=Path, default=None, help="JSON (default: benchmarks/results/rollout_v3_<seeds>.json)")
    ap.add_argument("--rejudge", type=Path, nargs="+", default=None,
                    help="judge written JSONs again, their generator seeds together (no runs); --out writes the combined JSON")
    args = ap.parse_args(argv)
    crit = load_criteria(args.criteria)
    if args.rejudge:
        runs: dict[str, dict[str, Any]] = {}
        for f in args.rejudge:
            # one generator seed's data modes may come from several files (modes run in parallel)
            for gseed, by_mode in json.loads(f.read_text())["runs"].items():
                twice = sorted(set(by_mode) & set(runs.get(gseed, {})))
                if twice:
                    raise SystemExit(f"{f}: generator seed {gseed} data mode(s) {twice} already read from another file")
                runs.setdefault(gseed, {}).update(by_mode)
        verdicts = judge(runs, crit)
        print_table(runs, verdicts, crit)
        if args.out:
            args.out.write_text(json.dumps({"criteria_file": str(args.criteria), "criteria": crit, "seeds": list(runs),
                                            "combined_from": [str(f) for f in args.rejudge], "runs": runs,
                                            "verdicts": verdicts}, indent=1))
            print(f"results: {args.out}")
        return 0
    seeds = args.seeds or (crit["generator_seeds"]["development"] if args.dev else crit["generator_seeds"]["judged"])
    if args.set and not args.dev:
        print("note: --set changes the committed size; its verdicts are not the benchmark's", flush=True)
    from thinkjepa.cache_schema.fsio import atomic_write_text

    modes = args.modes or crit["modes"]
    path = args.out or REPO / "benchmarks" / "results" / f"rollout_v3_seed{'-'.join(map(str, seeds))}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    head = {"criteria_file": str(args.criteria), "criteria": crit, "seeds": seeds, "modes": modes, "extra_set": args.set}
    runs: dict[str, dict[str, Any]] = {}

    def keep(gseed: int):
        def done(mode: str, run: dict[str, Any]) -> None:
            # the finished modes so far, without verdicts: --rejudge judges what a cut-short run kept
            runs.setdefault(str(gseed), {})[mode] = run
            atomic_write_text(path, json.dumps({**head, "partial": True, "runs": runs}, indent=1))
        return done

    for g in seeds:
        runs[str(g)] = run_seed(g, modes, crit, args.workdir.resolve(), args.set, args.with_jepa_only, args.ablations,
                                on_mode=keep(g))
    verdicts = judge(runs, crit)
    print_table(runs, verdicts, crit)
    atomic_write_text(path, json.dumps({**head, "runs": runs, "verdicts": verdicts}, indent=1))
    print(f"results: {path}")
    return 0



if __name__ == "__main__":
    sys.exit(main())

"""What the cached thinker guidance makes linearly available on rollout benchmark v3, before any
predictor trains on it: the diagnosis behind criterion V1a (the fair VLM-only must beat
last-observed by 15%, docs/results.md).

The fair ``vlm_only`` reads only the pooled guidance (dense latents and hand state zeroed, the
thinker sees the clip up to t-1), and its head's offsets are taken around the last observed
pose. To beat last-observed it must know where the hands go: how fast and which way they were
moving (the heading and speed shown in the thinker's late frames) and the turn (the cue card in
its early frames). This script synthesises v3 at the judged layout (criteria_v3_rollout.yaml),
runs index, vLLM extraction and encoding, and fits ridge probes on held-out scenes
(thinkjepa/evaluate/probe.py) from

- the pooled guidance the model reads (``model.pooling``), and
- the past V-JEPA2 latents (what the dense branch reads), for comparison,

to the cue's class (accuracy, chance 0.25), the past wrist displacement over the dense window
(the velocity: R^2 per camera axis) and the displacement from the last observed pose to the end
of rollout step 4 (the target vlm_only must predict: R^2). It prints one table and writes JSON.

    uv run --extra cpu python benchmarks/probe_guidance.py --seed 100 --out runs/probe/seed100.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CRITERIA = REPO / "benchmarks" / "criteria_v3_rollout.yaml"


def _bench_rollout():
    spec = importlib.util.spec_from_file_location("bench_rollout", REPO / "benchmarks" / "bench_rollout.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def prepare(workdir: Path, seed: int, scenes: int, episodes: int, mode: str, thinker_stop: str):
    """The judged layout at a chosen size, extracted and encoded; returns (cfg, labels)."""
    from thinkjepa.app import pipeline
    from thinkjepa.app.demo import demo_config, demo_defaults, prepare_models, synthesize_demo_data
    from thinkjepa.config import load_config

    br = _bench_rollout()
    over = [*br.overrides(br.load_criteria(CRITERIA)["size"]), f"demo.seed={seed}", f"demo.scenes={scenes}",
            f"demo.episodes_per_scene={episodes}", f"demo.mode={mode}", f"sampling.thinker_stop={thinker_stop}"]
    preview = load_config(None, over, base=demo_defaults(), use_default_file=False)
    q, v = prepare_models(workdir, preview)
    data = synthesize_demo_data(workdir / "data", preview)
    cfg = demo_config(workdir, data, q, v, over)
    pipeline.run(cfg, stages=["index", "extract", "encode"])
    return cfg, json.loads((data / "synth_labels.json").read_text())


def features_and_targets(cfg, labels: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per window of every split: guidance and past-latent features, the cue class, the past
    wrist displacement and the step-4 displacement (both hands' mean, camera frame of t-1)."""
    from thinkjepa.data.camera import world_to_camera
    from thinkjepa.joints import WRIST_INDEX
    from thinkjepa.sampling import rollout_frames
    from thinkjepa.train.dataset import WindowDataset

    wrists = [WRIST_INDEX[h] for h in ("left", "right")]
    steps = cfg.eval.rollout_steps
    rows: dict[str, list[Any]] = {k: [] for k in ("guidance", "latents", "cue", "past", "future", "scene")}
    for split in ("train", "val", "test"):
        ds = WindowDataset(cfg, split)
        for i, ref in enumerate(ds.refs):
            joints, _, pose = ds._episode(ref)
            w = ref.window
            last = w.past[-1]
            cam = np.asarray(pose[last], np.float64)
            end = rollout_frames(w, steps)[-1][-1]
            at = {f: world_to_camera(joints[f][wrists], cam).mean(0) for f in (w.past[0], last, end)}
            g = ds.guidance_inputs(i)
            rows["guidance"].append(np.concatenate([v.numpy().reshape(-1) for _, v in sorted(g.items())]))
            rows["latents"].append(ds[i]["past_latents"].numpy().reshape(-1))
            rows["cue"].append(labels["episodes"][w.clip_id]["turn"])
            rows["past"].append(at[last] - at[w.past[0]])
            rows["future"].append(at[end] - at[last])
            rows["scene"].append(ref.key.split("/")[0])
    return {k: np.asarray(v) for k, v in rows.items()}


def probe(rows: dict[str, np.ndarray]) -> dict[str, Any]:
    from thinkjepa.evaluate.probe import held_out_accuracy, held_out_r2

    out: dict[str, Any] = {"windows": len(rows["cue"]), "scenes": len(set(rows["scene"].tolist()))}
    for feat in ("guidance", "latents"):
        X = rows[feat]
        out[feat] = {
            "dims": int(X.shape[1]),
            "cue_accuracy": held_out_accuracy(X, rows["cue"], rows["scene"], classes=4),
            "past_displacement_r2": held_out_r2(X, rows["past"], rows["scene"]).round(4).tolist(),
            "step4_displacement_r2": held_out_r2(X, rows["future"], rows["scene"]).round(4).tolist(),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=100, help="generator seed (default: the development seed)")
    ap.add_argument("--scenes", type=int, default=48)
    ap.add_argument("--episodes-per-scene", type=int, default=8)
    ap.add_argument("--mode", default="cued")
    ap.add_argument("--thinker-stop", nargs="+", default=["forecast", "dense"],
                    help="forecast: the fair vlm_only's view (up to t-1); dense: thinker frames end before the dense window")
    ap.add_argument("--workdir", type=Path, default=Path("runs/probe_guidance"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    result: dict[str, Any] = {"seed": args.seed, "mode": args.mode, "by_thinker_stop": {}}
    for stop in args.thinker_stop:
        t0 = time.perf_counter()
        cfg, labels = prepare(args.workdir / f"seed{args.seed}-{args.mode}-{stop}", args.seed, args.scenes,
                              args.episodes_per_scene, args.mode, stop)
        r = probe(features_and_targets(cfg, labels))
        r["seconds"] = round(time.perf_counter() - t0, 1)
        result["by_thinker_stop"][stop] = r
        print(f"thinker_stop={stop}: {r['windows']} windows in {r['scenes']} scenes ({r['seconds']:.0f} s)")
        print("  features   dims   cue acc (chance 0.25)   past displacement R^2 (x, y, z)   step-4 displacement R^2")
        for feat in ("guidance", "latents"):
            f = r[feat]
            print(f"  {feat:9s} {f['dims']:6d}   {f['cue_accuracy']:.3f}                   "
                  f"{f['past_displacement_r2']}   {f['step4_displacement_r2']}")
    out = args.out or args.workdir / f"seed{args.seed}-{args.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

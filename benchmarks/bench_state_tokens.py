"""Does a JEPA-only model with state tokens reach constant velocity? (issue 28, item C)

Builds the demo's guidance-v2 data (``tj demo``'s defaults, generator seed ``--seed``), indexes
and encodes it with the tiny V-JEPA2 (no thinker: both rows are JEPA-only), trains
``jepa_only`` and ``jepa_state`` (``jepa_only`` with ``model.state_tokens: true``) for every
training seed, and scores them with ``tj-eval``'s own code beside the ``last_observed`` and
``constant_velocity`` baselines on the test windows. Prints a JSON table and writes it to
``<workdir>/state_tokens.json``.

    uv run --extra cpu python benchmarks/bench_state_tokens.py runs/bench_state --seed 5 --train-seeds 0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

VARIANTS = {"jepa_state": {"model.variant": "jepa_only", "model.state_tokens": True}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--seed", type=int, default=5, help="generator seed of the demo data")
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--set", nargs="*", default=[], help="extra dotted overrides, e.g. train.epochs=80")
    args = ap.parse_args()

    from thinkjepa.app import pipeline
    from thinkjepa.app.demo import demo_config, demo_defaults, prepare_models, synthesize_demo_data
    from thinkjepa.config import load_config
    from thinkjepa.evaluate.run import evaluate_all, public
    from thinkjepa.train.loop import train_seeds

    wd = args.workdir.resolve()
    over = [f"demo.seed={args.seed}", f"train.seeds={json.dumps(args.train_seeds)}",
            'eval.variants=["jepa_only","jepa_state"]', "eval.bootstrap=500", *args.set]
    base = demo_defaults() | {"variants": VARIANTS}
    preview = load_config(None, over, base=base, use_default_file=False)
    qwen, vjepa = prepare_models(wd, preview)
    synthesize_demo_data(wd / "data", preview)
    cfg = demo_config(wd, wd / "data", qwen, vjepa, over, base=base)
    pipeline._run_index(cfg)
    pipeline._run_encode(cfg)
    for v in cfg.eval.variants:
        t0 = time.perf_counter()
        train_seeds(cfg, v, progress=False, skip_finished=True)
        print(f"{v}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
    res = public(evaluate_all(cfg))
    out = {name: {"ADE": m["ADE"], "ADE_std": m["ADE_std"], "FDE": m["FDE"], "trainable_params": m["trainable_params"],
                  "per_seed_ADE": {s: v["ADE"] for s, v in m["per_seed"].items()}, "ADE_by_frame": m["ADE_by_step"]}
           for name, m in res["models"].items() if m["kind"] != "test_ablation"}
    print(json.dumps(out, indent=1))
    (wd / "state_tokens.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

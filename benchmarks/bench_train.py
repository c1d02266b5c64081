"""Training throughput and data-loading stalls on the tiny config, measured in one process;
with ``--processes``, data-parallel scaling under torchrun.

    python benchmarks/bench_train.py [--steps N] [--episodes N] [--workers 0 2] [--workdir DIR]
    python benchmarks/bench_train.py --processes 1 2 [--steps N] [--workers W]

Builds a synthetic dataset, the tiny V-JEPA2 JEPA cache (real encode stage) and a VLM cache
with random states shaped like the tiny Qwen3-VL thinker's (4 layers x 128, ~120 prompt
tokens, 8 thinking tokens, float16), then trains the demo's model (``thinkjepa/defaults/
demo.yaml``) for ``--steps`` steps per setting through ``run_training``. Per setting it prints
steps/s and the share of step time spent waiting for the next batch (``next(loader)`` plus
the host-to-device copy; the first steps, which include worker start-up, are left out), then
the ratios against the baseline in this same run: per-layer means read by the main process
(``--workers`` first value).

Guidance modes: ``means`` (FiLM's input: per-layer token means, a few KB per window) and
``tokens`` (cross-attention's input: ``model.guidance_tokens`` token states per stream,
padded, with masks). Both run the same FiLM model (FiLM accepts either input), so the
difference is the data path alone.

``--processes 1 2``: the same training (means, the first ``--workers`` value) launched by
``torchrun --nproc_per_node P -m thinkjepa.app.cli.train_cmd`` for each ``P``, at the same global
batch (``train.batch_size``), so each process computes ``1/P`` of every step. Prints steps/s,
windows/s and the scaling ratio against the first ``P``. On CUDA each process has one GPU; on
CPU the launchers split the cores (one process: accelerate sets ``cores`` threads; ``P > 1``:
torchrun sets ``OMP_NUM_THREADS=1``), so the ratio is what the extra processes buy on the
same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

THINKER_LAYERS = [0, 1, 2, 3]
THINKER_HIDDEN = 128


def build(workdir: Path, episodes: int, windows_per_clip: int):
    import torch

    from thinkjepa.app.demo import demo_defaults
    from thinkjepa.cache_schema import TOKEN_TEXT, TOKEN_VISION, CacheWriter, StoreMeta, VLMEntry
    from thinkjepa.config import load_config
    from thinkjepa.data.manifest import build_manifest
    from thinkjepa.data.synth import synthesize_dataset
    from thinkjepa.extract.encode import run_encode
    from thinkjepa.extract.runner import vlm_store_extra
    from thinkjepa.tiny.vjepa2 import build_tiny_vjepa2
    from thinkjepa.train.dataset import split_windows

    data = workdir / "data"
    if not (data / ".complete").exists():
        synthesize_dataset(data, episodes=episodes, seed=0, n_frames=64, size=64, tasks=4, progress=True)
        (data / ".complete").write_text("ok\n")
    base = demo_defaults()
    cfg = load_config(None, [
        f"workdir={workdir}", f"data.root={data}", f"encoder.model={workdir / 'tiny-vjepa2'}",
        "thinker.model=bench-thinker", f"thinker.layers={THINKER_LAYERS}",
        f"sampling.windows_per_clip={windows_per_clip}", "sampling.window_hop=1",
        "data.split_fractions=[0.5, 0.25, 0.25]",
    ], base=base, use_default_file=False)
    if not (workdir / "tiny-vjepa2" / "config.json").exists():
        build_tiny_vjepa2(workdir / "tiny-vjepa2", frames_per_clip=8, crop_size=cfg.encoder.frame_size)
    build_manifest(cfg.data.root, cfg.path(cfg.data.manifest), cfg.data, cfg.sampling)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    run_encode(cfg, progress=True)
    keys = [r.key for s in ("train", "val", "test") for r in split_windows(cfg, s)]
    meta = StoreMeta(kind="vlm", model="bench-thinker", revision=None, layers=THINKER_LAYERS,
                     layer_convention="decoder_output_prenorm", hidden_size=THINKER_HIDDEN,
                     storage_dtype="float16", extra=vlm_store_extra(cfg))
    rng = np.random.default_rng(0)
    with CacheWriter(cfg.url(cfg.thinker.cache), meta, part="shard-00000-of-00001") as w:
        done = set(w.keys())
        for key in keys:
            if key in done:
                continue
            n_pre, n_gen = int(rng.integers(100, 140)), 8
            kind = np.full(n_pre, TOKEN_TEXT, np.uint8)
            kind[20:84] = TOKEN_VISION
            frame = np.where(kind == TOKEN_VISION, (np.arange(n_pre) - 20) // 16, -1).astype(np.int32)
            w.commit(VLMEntry(
                key=key, prefill=rng.standard_normal((4, n_pre, THINKER_HIDDEN), dtype=np.float32),
                generated=rng.standard_normal((4, n_gen, THINKER_HIDDEN), dtype=np.float32),
                prefill_ids=rng.integers(0, 400, n_pre).astype(np.int32),
                generated_ids=rng.integers(0, 400, n_gen).astype(np.int32),
                prefill_kind=kind, frame_index=frame, text="bench", provenance={}, fingerprint="bench"))
    return cfg


def bench_config(cfg, name: str, workers: int, steps: int):
    """``cfg`` training ``steps`` steps into a fresh ``bench_runs/<name>``, no checkpoints or validation."""
    out = cfg.path("{workdir}") / "bench_runs" / name
    shutil.rmtree(out, ignore_errors=True)
    tc = cfg.train.model_copy(update={
        "out": str(out), "max_steps": steps, "num_workers": workers, "checkpoint_every": 0,
        "eval_every": 10_000, "mixed_precision": "auto",
    })
    return cfg.model_copy(update={"train": tc})


def run_setting(cfg, guidance: str, workers: int, steps: int) -> dict:
    from thinkjepa.train.loop import run_training

    run_cfg = bench_config(cfg, f"{guidance}-w{workers}", workers, steps)
    t0 = time.perf_counter()
    run = run_training(run_cfg, "thinkjepa", guidance=guidance, progress=False)
    wall = time.perf_counter() - t0
    s = json.loads((run / "summary.json").read_text())
    return {"guidance": guidance, "workers": workers, "steps_per_s": s["steps_per_s"],
            "data_wait_frac": s["data_wait_frac"], "wall_s": wall, "device": s["device"]}


def run_processes(cfg, nproc: int, workers: int, steps: int) -> dict:
    """One ``tj-train`` launch on ``nproc`` processes through torchrun; its summary."""
    import socket
    import subprocess
    import sys

    from thinkjepa.config import save_config

    run_cfg = bench_config(cfg, f"dist-p{nproc}", workers, steps)
    out = run_cfg.path(run_cfg.train.out)
    save_config(run_cfg, out, "pipelines.yaml")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
           "127.0.0.1", "--master_port", str(port), "-m", "thinkjepa.app.cli.train_cmd", "--config",
           str(out / "pipelines.yaml"), "--variant", "thinkjepa"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=3600)
    wall = time.perf_counter() - t0
    s = json.loads((out / "thinkjepa" / "seed-0" / "summary.json").read_text())
    if s["processes"] != nproc:
        raise RuntimeError(f"launched {nproc} processes, the run reports {s['processes']}")
    return {"processes": nproc, "steps_per_s": s["steps_per_s"], "data_wait_frac": s["data_wait_frac"],
            "wall_s": wall, "device": s["device"], "batch": s["batch_size"]}


def scaling(cfg, processes: list[int], workers: int, steps: int) -> None:
    rows = [run_processes(cfg, p, workers, steps) for p in processes]
    base = rows[0]
    print(f"\n{'processes':>9} {'steps/s':>9} {'windows/s':>10} {'data wait':>10} {'x steps/s':>10} {'wall s':>7}  device")
    for r in rows:
        print(f"{r['processes']:>9} {r['steps_per_s']:>9.3g} {r['steps_per_s'] * r['batch']:>10.3g} "
              f"{100 * r['data_wait_frac']:>9.1f}% {r['steps_per_s'] / base['steps_per_s']:>10.2f} {r['wall_s']:>7.1f}"
              f"  {r['device']}")
    for r in rows[1:]:
        print(f"\nscaling {r['processes']} / {base['processes']} processes (same global batch {r['batch']}): "
              f"{r['steps_per_s'] / base['steps_per_s']:.2f}x steps/s (ideal {r['processes'] / base['processes']:.0f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--windows-per-clip", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--workdir", type=Path, default=None, help="Keep the dataset and caches here (reused).")
    ap.add_argument("--processes", type=int, nargs="+", default=None,
                    help="Compare these process counts under torchrun instead of the guidance/worker grid.")
    args = ap.parse_args()

    tmp = None
    workdir = args.workdir
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="bench_train_")
        workdir = Path(tmp)
    try:
        cfg = build(workdir.resolve(), args.episodes, args.windows_per_clip)
        from thinkjepa.train.dataset import WindowDataset

        n_train = len(WindowDataset(cfg, "train", guidance="means"))
        if args.processes:
            print(f"\ntiny config: {n_train} train windows, global batch {cfg.train.batch_size}, "
                  f"{args.steps} steps per launch, {args.workers[0]} workers, {os.cpu_count()} CPU cores")
            scaling(cfg, args.processes, args.workers[0], args.steps)
            return
        print(f"\ntiny config: {n_train} train windows, batch {cfg.train.batch_size}, model depth "
              f"{cfg.model.pred_depth} width {cfg.model.pred_width}, guidance tokens {cfg.model.guidance_tokens}, "
              f"{args.steps} steps per setting, {os.cpu_count()} CPU cores")
        rows = [run_setting(cfg, g, w, args.steps) for g in ("means", "tokens") for w in args.workers]
        base = rows[0]
        print(f"\n{'guidance':<8} {'workers':>7} {'steps/s':>9} {'data wait':>10} {'x steps/s':>10}  device")
        for r in rows:
            print(f"{r['guidance']:<8} {r['workers']:>7} {r['steps_per_s']:>9.1f} {100 * r['data_wait_frac']:>9.1f}% "
                  f"{r['steps_per_s'] / base['steps_per_s']:>10.2f}  {r['device']}")
        by = {(r["guidance"], r["workers"]): r for r in rows}
        w_hi = max(args.workers)
        print(f"\nratios (same process; baseline = means, {base['workers']} workers):")
        for w in args.workers:
            m, t = by[("means", w)], by[("tokens", w)]
            print(f"  tokens / means steps/s with {w} workers: {t['steps_per_s'] / m['steps_per_s']:.2f}; "
                  f"data wait {100 * m['data_wait_frac']:.1f}% (means) vs {100 * t['data_wait_frac']:.1f}% (tokens)")
        if w_hi != base["workers"]:
            for g in ("means", "tokens"):
                a, b = by[(g, base["workers"])], by[(g, w_hi)]
                print(f"  {g}: {w_hi} workers / {base['workers']} workers steps/s: "
                      f"{b['steps_per_s'] / a['steps_per_s']:.2f}; data wait {100 * a['data_wait_frac']:.1f}% -> "
                      f"{100 * b['data_wait_frac']:.1f}%")
        best = min(r["data_wait_frac"] for r in rows if r["workers"] == w_hi)
        print(f"\ntarget data wait < 5% of step time with workers: {'met' if best < 0.05 else 'NOT met'} "
              f"(lowest {100 * best:.1f}%)")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

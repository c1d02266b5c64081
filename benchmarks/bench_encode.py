"""Encode-stage throughput: frozen V-JEPA2 windows/s, batched vs one window per call.

    python benchmarks/bench_encode.py                       # tiny encoder, CPU
    python benchmarks/bench_encode.py --real-size --frames 32 --frame-size 256 --batch 8   # ViT-L/16 dims, random weights (GPU)

Prints windows/s of ``JepaEncoder.encode`` at batch 1 (the baseline, run first in the same
process) and at ``--batch``, and their ratio, plus the share of the time spent in the video
processor (CPU preprocessing) versus the model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (kernels, allocator)
    _sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync()
    return (time.perf_counter() - t0) / repeats


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real-size", action="store_true", help="V-JEPA2 ViT-L/16 dimensions (1024 x 24 layers), random weights")
    p.add_argument("--frames", type=int, default=8, help="frames per window (multiple of the tubelet size 2)")
    p.add_argument("--frame-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, help="also write the results here (gpu_check.py reads them)")
    args = p.parse_args()

    import torch

    from thinkjepa.config import EncoderConfig
    from thinkjepa.extract.encode import JepaEncoder
    from thinkjepa.tiny.vjepa2 import build_tiny_vjepa2

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        size = dict(hidden_size=1024, num_layers=24, num_heads=16) if args.real_size else {}
        model_dir = build_tiny_vjepa2(Path(tmp) / "vjepa2", frames_per_clip=max(args.frames, 16),
                                      crop_size=args.frame_size, **size)
        enc = JepaEncoder(EncoderConfig(model=str(model_dir), frame_size=args.frame_size))
        rng = np.random.default_rng(0)
        clips = [rng.integers(0, 255, (args.frames, args.frame_size, args.frame_size, 3), dtype=np.uint8)
                 for _ in range(args.batch)]
        t_one = _time(lambda: enc.encode(clips[:1]), args.repeats)
        t_batch = _time(lambda: enc.encode(clips), args.repeats)
        t_proc = _time(lambda: enc.processor(list(clips), return_tensors="pt", device=str(enc.device)), args.repeats)
        lat = enc.encode(clips[:1])
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {dev}; encoder {'ViT-L/16 dims' if args.real_size else 'tiny'} ({enc.hidden_size} wide, {enc.dtype})")
    print(f"window: {args.frames} frames of {args.frame_size}px -> latents {tuple(lat.shape[1:])}")
    print(f"  batch 1 (baseline): {1 / t_one:8.2f} windows/s")
    print(f"  batch {args.batch:<2}          : {args.batch / t_batch:8.2f} windows/s   ratio x{(args.batch / t_batch) * t_one:.2f}")
    print(f"  video processor share of a batched call: {t_proc / t_batch:.0%}")
    if args.json:
        args.json.write_text(json.dumps({
            "device": dev, "frames": args.frames, "frame_size": args.frame_size, "batch": args.batch,
            "latents": list(lat.shape[1:]), "dtype": str(enc.dtype), "windows_per_s_batch1": 1 / t_one,
            "windows_per_s": args.batch / t_batch, "processor_share": t_proc / t_batch}, indent=2))


if __name__ == "__main__":
    main()

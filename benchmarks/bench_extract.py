"""Thinker throughput: the vLLM backend against the transformers backend, in one process.

    python benchmarks/bench_extract.py                     # tiny random Qwen3-VL Thinking, CPU
    python benchmarks/bench_extract.py --real-size --load-format dummy --dtype bfloat16 \\
        --clips 64 --frames 32 --frame-size 256 --max-new-tokens 16 --clips-per-call 64   # GPU
    python benchmarks/bench_extract.py --model Qwen/Qwen3-VL-2B-Thinking --load-format dummy ...

Both backends get the same requests (same frames, prompt, layers, token budget) and produce
the same output contract (states of every stored layer for the prompt and the generated
tokens). The baseline is the reference code's way: transformers, one clip per ``generate``
with forward hooks. The vLLM backend gets ``--clips-per-call`` clips per engine call.
Printed: engine start-up, clips/s, prompt and generated tokens/s per backend, and the
vLLM / transformers ratios. Start-up and one warm-up call are not in the timed part.

``--real-size`` builds the tiny checkpoint's tokenizer and processor files with a config of
Qwen3-VL-2B's dimensions (28 layers of width 2048, 16 heads / 8 KV heads of 128, MLP 6144,
vocab 151936; 24-block 1024-wide vision tower with deepstack from blocks 5, 11, 17), so a
machine without the hub runs the real-size model with random weights (``--load-format dummy``:
vLLM's dummy loader, and a random-init model for transformers). ``--model ID`` loads a
checkpoint's config and tokenizer from the Hugging Face cache instead.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

QWEN3_VL_2B_TEXT = {
    "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28, "num_attention_heads": 16,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 262144,
}
QWEN3_VL_2B_VISION = {
    "depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16, "out_hidden_size": 2048,
    "num_position_embeddings": 2304, "deepstack_visual_indexes": [5, 11, 17],
}
REFERENCE_LAYERS_2B = [0, 4, 8, 12, 16, 20, 24, 27]


def build_model_dir(args: argparse.Namespace, tmp: Path) -> tuple[str, list[int]]:
    """The checkpoint folder (or hub id) to benchmark and the layers to store."""
    if args.model:
        return args.model, args.layers or REFERENCE_LAYERS_2B
    from thinkjepa.tiny.qwen3vl import build_tiny_qwen3vl_thinking

    path = build_tiny_qwen3vl_thinking(tmp / "tiny-qwen3vl-thinking", seed=0)
    if not args.real_size:
        return str(path), args.layers or [0, 1, 2, 3]
    cfg_file = Path(path) / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["text_config"].update(QWEN3_VL_2B_TEXT)
    cfg["text_config"]["rope_parameters"]["mrope_section"] = [24, 20, 20]  # sums to head_dim / 2
    cfg["vision_config"].update(QWEN3_VL_2B_VISION)
    cfg["tie_word_embeddings"] = True
    cfg_file.write_text(json.dumps(cfg, indent=2))
    # Only the dimensions are real: the tiny weights no longer fit and must not be loaded.
    (Path(path) / "model.safetensors").unlink(missing_ok=True)
    return str(path), args.layers or REFERENCE_LAYERS_2B


def make_requests(args: argparse.Namespace):
    from thinkjepa.extract.prompt import build_prompt
    from thinkjepa.extract.thinker_io import ThinkerRequest

    rng = np.random.default_rng(0)
    template = "Describe this video. Task: {task}. Scene: {description}. Environment: {environment}."
    reqs = []
    for i in range(args.clips):
        # Smooth random frames (a blurred noise field per clip, drifting over time): closer to
        # video than white noise, identical for both backends.
        base = rng.integers(0, 256, (args.frame_size // 8, args.frame_size // 8, 3), dtype=np.uint8)
        frames = []
        for t in range(args.frames):
            f = np.kron(np.roll(base, t, axis=1), np.ones((8, 8, 1), np.uint8))
            frames.append(f[: args.frame_size, : args.frame_size])
        indices = [int(x) for x in np.linspace(0, 2 * args.frames - 1, args.frames)]
        meta = {"task": f"bench_task_{i % 4}", "description": "pick up the cup and put it on the shelf",
                "environment": "tablecloth:green, background:white"}
        reqs.append(ThinkerRequest(key=f"bench_task_{i % 4}/{i}@{2 * args.frames}", frames=np.stack(frames),
                                   frame_indices=indices, fps=30.0, user_text=build_prompt(template, meta)))
    return reqs


def run_backend(name: str, args: argparse.Namespace, model: str, layers: list[int], reqs) -> dict:
    from thinkjepa.config import ThinkerConfig
    from thinkjepa.extract.backends import make_backend

    cfg = ThinkerConfig(
        model=model, backend=name, layers=layers, frame_size=args.frame_size, max_new_tokens=args.max_new_tokens,
        max_prefill_tokens=args.max_prefill_tokens, compute_dtype=args.dtype, load_format=args.load_format,
        clips_per_call=args.clips_per_call, tensor_parallel_size=args.tp, max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
    )
    t0 = time.perf_counter()
    backend = make_backend(cfg)
    startup = time.perf_counter() - t0
    try:
        warm = backend.extract(reqs[:1])
        if isinstance(warm[0], Exception):
            raise RuntimeError(f"{name}: warm-up request failed: {warm[0]}")
        step = args.clips_per_call if name == "vllm" else 1
        outs = []
        t0 = time.perf_counter()
        for i in range(0, len(reqs), step):
            outs.extend(backend.extract(reqs[i:i + step]))
        seconds = time.perf_counter() - t0
    finally:
        backend.close()
        del backend
        gc.collect()
        _free_gpu()
    failed = [o for o in outs if isinstance(o, Exception)]
    if failed:
        raise RuntimeError(f"{name}: {len(failed)} of {len(outs)} requests failed, first: {failed[0]}")
    prompt_tokens = sum(int(o.prompt_tokens) for o in outs)
    gen_tokens = sum(len(o.all_generated_ids) for o in outs)
    return {
        "backend": name, "startup_s": startup, "seconds": seconds, "clips": len(outs),
        "clips_per_s": len(outs) / seconds, "prompt_tok_per_s": prompt_tokens / seconds,
        "gen_tok_per_s": gen_tokens / seconds, "prompt_tokens_per_clip": prompt_tokens / len(outs),
        "gen_tokens_per_clip": gen_tokens / len(outs), "stored_prefill_per_clip": float(np.mean([o.prefill.shape[1] for o in outs])),
        "hidden": int(outs[0].prefill.shape[2]), "layers": int(outs[0].prefill.shape[0]),
    }


def _free_gpu() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="Hub id or folder (default: build the tiny random checkpoint)")
    p.add_argument("--real-size", action="store_true", help="tiny tokenizer/processor, Qwen3-VL-2B dimensions (needs --load-format dummy)")
    p.add_argument("--load-format", default="auto", help="'dummy': random weights of the model's real size")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--layers", type=lambda s: [int(x) for x in s.split(",")], help="stored layers, e.g. 0,4,8")
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--frames", type=int, default=8, help="thinker frames per clip")
    p.add_argument("--frame-size", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--max-prefill-tokens", type=int, default=1280)
    p.add_argument("--clips-per-call", type=int, default=12)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--tp", type=int, default=1, help="tensor parallel size (vLLM)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.6)
    p.add_argument("--backends", default="transformers,vllm", help="comma list; the ratio needs both")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = p.parse_args()
    if args.real_size and args.load_format != "dummy":
        p.error("--real-size has no real weights: pass --load-format dummy")

    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        model, layers = build_model_dir(args, Path(tmp))
        reqs = make_requests(args)
        print(f"device: {_device()}")
        print(f"model: {args.model or ('tiny, Qwen3-VL-2B dimensions' if args.real_size else 'tiny random Qwen3-VL Thinking')} "
              f"(load_format={args.load_format}, dtype={args.dtype}), layers {layers}")
        print(f"{args.clips} clips x {args.frames} frames of {args.frame_size}px, max_new_tokens {args.max_new_tokens}, "
              f"vLLM clips per call {args.clips_per_call}")
        results = {}
        # transformers first: vLLM reserves most of the GPU memory for its KV cache.
        for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
            results[name] = r = run_backend(name, args, model, layers, reqs)
            print(f"  {name:>12}: start {r['startup_s']:6.1f} s | {r['clips_per_s']:8.2f} clips/s | "
                  f"prompt {r['prompt_tok_per_s']:9.0f} tok/s | generated {r['gen_tok_per_s']:8.1f} tok/s | "
                  f"{r['prompt_tokens_per_clip']:.0f} prompt + {r['gen_tokens_per_clip']:.0f} generated tokens/clip, "
                  f"[{r['layers']} x {r['hidden']}] states")
        if {"vllm", "transformers"} <= set(results):
            v, t = results["vllm"], results["transformers"]
            print(f"vLLM / transformers: clips/s x{v['clips_per_s'] / t['clips_per_s']:.2f}, "
                  f"generated tok/s x{v['gen_tok_per_s'] / t['gen_tok_per_s']:.2f}")
        if args.json:
            print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

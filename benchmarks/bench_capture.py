"""What hidden-state capture costs: the thinker engine with capture + cache commit against the
same vLLM engine generating the same requests without capture, in one process.

    python benchmarks/bench_capture.py                  # tiny random Qwen3-VL Thinking, CPU
    python benchmarks/bench_capture.py --real-size --load-format dummy --dtype bfloat16 \\
        --clips 64 --frames 32 --frame-size 256 --clips-per-call 64 --sequential   # GPU
    python benchmarks/bench_capture.py --profile capture.prof   # cProfile of the capture rounds (client side)

Baseline: ``vllm.LLM`` built from the very arguments of the thinker engine
(``backend_vllm.engine_args``) without capture (no speculative method and connector, no
worker extension), given the same prompts, videos and sampling (greedy, same token budget
and stop ids), so both generate the same tokens. Measured: the project's whole path, i.e.
``VLLMThinker.extract`` with the capture method of ``--capture`` (``hooks``: forward hooks
in the worker and its per-request files; ``speculative``: the cache-only draft and the
connector's gather and write; then the safetensors read back and output assembly) and
``CacheWriter.commit`` of every result; then, on the same engine, the extraction alone
without the commit ("capture alone"), which says how much of the gap is the engine's and how
much the commit's (on a 2-core box the commit's CPU competes with the engine's processes).

Both engines stay up together (CPU default; ``--sequential`` on a GPU, where each one takes
most of the memory) and run ``--rounds`` rounds in turn; printed are the median clips/s of
each, the median of the per-round ratios, and the capture path's split into engine call and
commit. The goal of issue 15 is capture + commit >= 0.9x of the engine's own clips/s.

The engines' model code runs in vLLM's worker processes, which ``--profile`` (this process)
does not see; ``benchmarks/spy_workers.py`` compares the two workers from a py-spy recording
of this script (its docstring has the commands).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import _device, _free_gpu, build_model_dir, make_requests  # noqa: E402

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


class PlainEngine:
    """The thinker's engine without capture: prompts, video and sampling made the same way."""

    def __init__(self, cfg) -> None:
        from vllm import LLM

        from thinkjepa.extract.backend_vllm import engine_args
        from thinkjepa.extract.thinker_io import open_thinker

        self.processor, self.info, layers = open_thinker(cfg)
        self.cfg = cfg
        self.llm = LLM(**engine_args(cfg, layers, self.info.num_hidden_layers, capture_to=None))

    def run(self, requests) -> list[int]:
        """Generated token count of each request."""
        from thinkjepa.extract.backend_vllm import engine_input_of, sampling_params

        inputs = [engine_input_of(self.processor, r)[1] for r in requests]
        outs = self.llm.generate(inputs, sampling_params(self.cfg, self.info, capture=False), use_tqdm=False)
        self.prompt_ids = [list(o.prompt_token_ids) for o in outs]
        return [len(o.outputs[0].token_ids) for o in outs]

    def close(self) -> None:
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = None


@dataclass(frozen=True)
class _Item:
    key: str
    clip_id: str


class CapturePath:
    """``VLLMThinker.extract`` and the commit of each result into a Zarr cache, through the
    extraction runner's own loop (``stage_run.run_batches``: batch k commits on the writer
    thread while the engine runs batch k+1)."""

    def __init__(self, cfg, cache_url: str) -> None:
        from thinkjepa.cache_schema import CacheWriter, StoreMeta
        from thinkjepa.extract.backend_vllm import VLLMThinker

        self.thinker = VLLMThinker(cfg)
        meta = StoreMeta(kind="vlm", model=cfg.model, revision=cfg.revision, layers=self.thinker.layers,
                         layer_convention=self.thinker.layer_convention, hidden_size=self.thinker.hidden_size,
                         storage_dtype=cfg.storage_dtype, extra={"bench": "capture"})
        self.writer = CacheWriter(cache_url, meta, part="bench")
        self.engine_s = self.commit_s = 0.0

    def run_all(self, requests, step: int) -> list[int]:
        """Every request, ``step`` per engine call; returns generated token counts. ``commit_s``
        grows by the wall time not spent in the engine (the commits the engine waited for)."""
        from thinkjepa.cache_schema import VLMEntry
        from thinkjepa.stage_run import ShardSummary, run_batches

        by_key = {r.key: r for r in requests}
        gen: list[int] = []
        engine_s = 0.0

        def run_batch(items, reqs):
            nonlocal engine_s
            t0 = time.perf_counter()
            outs = self.thinker.extract(reqs)
            engine_s += time.perf_counter() - t0
            entries = []
            for o in outs:
                if isinstance(o, Exception):
                    raise o
                gen.append(len(o.all_generated_ids))
                entries.append(VLMEntry(
                    key=o.key, prefill=o.prefill, generated=o.generated, prefill_ids=o.prefill_ids,
                    generated_ids=o.generated_ids, prefill_kind=o.prefill_kind, frame_index=o.frame_index, text=o.text,
                    provenance={"prompt": o.prompt, "all_generated_ids": o.all_generated_ids.tolist()},
                    fingerprint="bench"))
            return entries

        summary = ShardSummary(part="bench")
        t0 = time.perf_counter()
        run_batches([_Item(r.key, r.key) for r in requests], decode=lambda group: (lambda it: by_key[it.key]),
                    decode_errors=(), run_batch=run_batch, batch_size=step, sink=self.writer, summary=summary,
                    stage="bench", engine_step="engine", total=len(requests), progress=False)
        if summary.failed:
            raise RuntimeError(f"capture failed: {summary.failed}")
        self.engine_s += engine_s
        self.commit_s += time.perf_counter() - t0 - engine_s
        return gen

    def close(self) -> None:
        self.writer.close()
        self.thinker.close()


SETTINGS = {
    "scheduler_config": ("max_num_batched_tokens", "max_num_scheduled_tokens", "max_num_seqs", "enable_chunked_prefill",
                         "long_prefill_token_threshold", "max_num_partial_prefills", "async_scheduling"),
    "cache_config": ("block_size", "num_gpu_blocks", "num_cpu_blocks", "enable_prefix_caching", "cache_dtype"),
    "model_config": ("dtype", "max_model_len", "enforce_eager"),
}


def engine_settings(llm) -> dict[str, object]:
    """The resolved settings of an engine that decide its batches and kernels (what vLLM made
    of the arguments, speculative method included): like for like means these are equal."""
    vc = llm.llm_engine.vllm_config
    return {f"{section}.{name}": getattr(getattr(vc, section), name, None)
            for section, names in SETTINGS.items() for name in names}


def compare_settings(plain: dict[str, object], capture: dict[str, object]) -> list[str]:
    """The settings that differ between the two engines, as ``name: plain X, capture Y``."""
    return [f"{k}: plain {plain.get(k)!r}, capture {capture.get(k)!r}"
            for k in sorted(set(plain) | set(capture)) if plain.get(k) != capture.get(k)]


@dataclass(frozen=True)
class _ExtractOnly:
    """A capture path's engine calls without the commit: what capture costs inside the engine."""

    path: CapturePath

    def run_all(self, requests, step: int) -> list[int]:
        gen: list[int] = []
        for i in range(0, len(requests), step):
            for o in self.path.thinker.extract(requests[i:i + step]):
                if isinstance(o, Exception):
                    raise o
                gen.append(len(o.all_generated_ids))
        return gen


def one_round(engine, reqs, step: int, rename: str) -> tuple[float, list[int]]:
    """Seconds for every request, ``step`` per engine call. Keys get a per-round suffix so each
    round commits new entries (a re-commit of the same key is not the steady state)."""
    from dataclasses import replace

    batch = [replace(r, key=f"{r.key}#{rename}") for r in reqs]
    gen: list[int] = []
    t0 = time.perf_counter()
    if isinstance(engine, (CapturePath, _ExtractOnly)):
        gen = engine.run_all(batch, step)
    else:
        for i in range(0, len(batch), step):
            gen += engine.run(batch[i:i + step])
    return time.perf_counter() - t0, gen


def cache_sync() -> str:
    """How the bench's local cache makes each commit durable (``THINKJEPA_CACHE_FSYNC``)."""
    from thinkjepa.cache_schema.store import data_sync_method, durable_default

    return data_sync_method() if durable_default() else "none"


def write_json(path: Path, model: str, reqs, times, gens, split, ratio: float, last_prompt: list[int],
               method: str = "", extract_ratio: float | None = None) -> None:
    """Figures and the model's dimensions (for the prefill FLOP bound in gpu_check.py)."""
    import json

    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model)
    vc = cfg.vision_config
    merge = int(vc.spatial_merge_size)
    pads = sum(1 for t in last_prompt if t == cfg.video_token_id)
    n = len(reqs)
    # prompt tokens per clip: every clip of the bench has the same frame count and size
    out = {"clips": n, "prompt_tokens_per_clip": len(last_prompt), "video_patches_per_clip": pads * merge * merge,
           "ratio_capture_vs_plain": ratio, "capture_split_s": split, "capture_method": method,
           "ratio_capture_alone_vs_plain": extract_ratio, "cache_sync": cache_sync(),
           "model": {"text": cfg.text_config.to_dict(), "vision": vc.to_dict(), "spatial_merge": merge,
                     "patches_per_group": (reqs[0].frames.shape[1] // vc.patch_size) ** 2}}
    for name in ("plain", "capture", "extract"):
        med = float(np.median(times[name]))
        out[name] = {"clips_per_s": n / med, "prompt_tok_per_s": n * len(last_prompt) / med,
                     "gen_tok_per_s": sum(gens[name]) / med, "round_seconds": times[name]}
    path.write_text(json.dumps(out, indent=2, default=str))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="Hub id or folder (default: build the tiny random checkpoint)")
    p.add_argument("--real-size", action="store_true", help="tiny tokenizer/processor, Qwen3-VL-2B dimensions (needs --load-format dummy)")
    p.add_argument("--load-format", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--layers", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--frame-size", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--max-prefill-tokens", type=int, default=1280)
    p.add_argument("--clips-per-call", type=int, default=12)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.6)
    p.add_argument("--storage-dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    p.add_argument("--capture", default="auto", choices=["auto", "hooks", "speculative"],
                   help="thinker.capture of the capture path (auto: hooks without CUDA, speculative with)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sequential", action="store_true", help="one engine at a time (GPU: each takes most of the memory)")
    p.add_argument("--capture-first", action="store_true",
                   help="with --sequential: build and run the capture engine first (to see an order effect)")
    p.add_argument("--profile", help="write a cProfile of the capture rounds (this process) here")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--json", type=Path, help="also write the results here (gpu_check.py reads them)")
    args = p.parse_args()
    if args.real_size and args.load_format != "dummy":
        p.error("--real-size has no real weights: pass --load-format dummy")

    import torch

    from thinkjepa.config import ThinkerConfig
    from thinkjepa.extract.backend_vllm import capture_method

    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory(prefix="bench-capture-", dir=args.workdir) as tmp:
        model, layers = build_model_dir(args, Path(tmp))
        reqs = make_requests(args)
        cfg = ThinkerConfig(
            model=model, backend="vllm", layers=layers, frame_size=args.frame_size, max_new_tokens=args.max_new_tokens,
            max_prefill_tokens=args.max_prefill_tokens, compute_dtype=args.dtype, load_format=args.load_format,
            clips_per_call=args.clips_per_call, max_model_len=args.max_model_len,
            gpu_memory_utilization=args.gpu_memory_utilization, storage_dtype=args.storage_dtype,
            capture=args.capture)
        print(f"device: {_device()}; capture method: {capture_method(cfg)}")
        print(f"{args.clips} clips x {args.frames} frames of {args.frame_size}px, max_new_tokens {args.max_new_tokens}, "
              f"{args.clips_per_call} clips per call, layers {layers}, storage {args.storage_dtype}, cache sync {cache_sync()}")
        cache_url = str(Path(tmp) / "vlm.zarr")
        # plain_x: the plain rounds paired with the "extract" ones when both engines are up
        times: dict[str, list[float]] = {"plain": [], "capture": [], "extract": [], "plain_x": []}
        gens: dict[str, list[int]] = {}
        prof = cProfile.Profile() if args.profile else None
        split = {}

        def rounds(name: str, engine, n: int, offset: int = 0) -> None:
            for k in range(n):
                if prof is not None and name == "capture":
                    prof.enable()
                s, gens[name] = one_round(engine, reqs, args.clips_per_call, f"{offset + k}")
                if prof is not None:
                    prof.disable()
                times[name].append(s)

        def warm(engine) -> None:
            one_round(engine, reqs[:1], 1, "warm")
            if isinstance(engine, CapturePath):
                engine.engine_s = engine.commit_s = 0.0

        prompt_ids: list[list[int]] = []
        settings: dict[str, dict[str, object]] = {}

        def note_settings(name: str, eng) -> None:
            settings[name] = engine_settings(eng.llm if isinstance(eng, PlainEngine) else eng.thinker.llm)

        t0 = time.perf_counter()
        if args.sequential:
            order = [("plain", lambda: PlainEngine(cfg)), ("capture", lambda: CapturePath(cfg, cache_url))]
            for name, make in order[::-1] if args.capture_first else order:
                eng = make()
                note_settings(name, eng)
                try:
                    warm(eng)
                    rounds(name, eng, args.rounds)
                    if isinstance(eng, CapturePath):
                        split = {"engine": eng.engine_s, "commit": eng.commit_s}
                        rounds("extract", _ExtractOnly(eng), args.rounds, 100)
                    if isinstance(eng, PlainEngine):
                        prompt_ids = eng.prompt_ids
                finally:
                    eng.close()
                    gc.collect()
                    _free_gpu()
        else:
            plain, cap = PlainEngine(cfg), CapturePath(cfg, cache_url)
            note_settings("plain", plain)
            note_settings("capture", cap)
            try:
                warm(plain)
                warm(cap)
                for k in range(args.rounds):  # in turn, so both see the same machine load
                    rounds("plain", plain, 1, k)
                    rounds("capture", cap, 1, k)
                split = {"engine": cap.engine_s, "commit": cap.commit_s}
                for k in range(args.rounds):  # the engine alone, paired with plain rounds of its own
                    rounds("plain_x", plain, 1, 100 + k)
                    rounds("extract", _ExtractOnly(cap), 1, 100 + k)
                prompt_ids = plain.prompt_ids
            finally:
                cap.close()
                plain.close()
        print(f"engines up and warm after {time.perf_counter() - t0 - sum(map(sum, times.values())):.0f} s")

        differ = compare_settings(settings["plain"], settings["capture"])
        print("engine settings: " + ("equal (" + ", ".join(f"{k.split('.')[-1]} {v}" for k, v in settings["plain"].items()
                                                           if k.startswith("scheduler")) + ")"
                                     if not differ else "DIFFER: " + "; ".join(differ)))
        med = {n: float(np.median(v)) for n, v in times.items() if v}

        def ratio_of(name: str, base: str) -> float:
            if args.sequential:
                return med["plain"] / med[name]
            return float(np.median([p_ / c_ for p_, c_ in zip(times[base], times[name])]))

        ratio = ratio_of("capture", "plain")
        extract_ratio = ratio_of("extract", "plain_x")
        n = len(reqs)
        for name in ("plain", "capture", "extract"):
            print(f"  {name:>8}: {n / med[name]:8.2f} clips/s (median of {args.rounds}: "
                  f"{', '.join(f'{t:.2f}' for t in times[name])} s), generated {sum(gens[name])} tokens")
        if gens["plain"] != gens["capture"]:
            print(f"  note: generated token counts differ (plain {gens['plain']}, capture {gens['capture']})")
        total = split["engine"] + split["commit"]
        print(f"  capture path: extract {100 * split['engine'] / total:.0f}% | commit not hidden behind the engine "
              f"{100 * split['commit'] / total:.0f}% of its time")
        print(f"capture + commit / plain engine: x{ratio:.2f} clips/s (goal >= 0.90)")
        print(f"capture alone (no commit) / plain engine: x{extract_ratio:.2f} clips/s")
        if args.json:
            write_json(args.json, model, reqs, times, gens, split, ratio, prompt_ids[-1] if prompt_ids else [],
                       capture_method(cfg), extract_ratio)
        if prof is not None:
            prof.dump_stats(args.profile)
            pstats.Stats(args.profile).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()

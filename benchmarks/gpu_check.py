"""The GPU path at reference size in one run: ``benchmarks/gpu_check.sh`` calls this.

Sections, each in its own process (a section's GPU memory is freed before the next, and one
that fails or runs out of time does not take the others down):

- ``extract``: the thinker at Qwen3-VL-2B size with vLLM's dummy weights
  (``bench_capture.py --real-size``): clips/s and prompt tokens/s of the plain engine and of
  the capture + commit path, their ratio, and the ratio of the plain engine's clips/s to the
  card's prefill FLOP bound (dense bf16 peak / prefill FLOPs of one clip, vision tower included);
- ``encode``: frozen V-JEPA2 at ViT-L/16 size, 32 frames of 256 px (``bench_encode.py``);
- ``train``: one training step of the reference model (predictor depth 12, width 384; latents
  16 + 16 tubelets x 256 patches x 1024; FiLM guidance from 8 layers x 2048; batch 16; bf16
  autocast, AdamW): steps/s and peak memory.

Writes one JSON (``--out``). Refuses to run without a CUDA GPU (exit status 2), unless
``--smoke`` (tiny sizes, any device: checks the plumbing, measures nothing of interest).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFUSAL_EXIT = 2

# Dense bf16 tensor-core peak, TFLOP/s (vendor data sheets, without sparsity). Matched against
# torch.cuda.get_device_name() in order; --peak-tflops overrides.
PEAK_BF16_TFLOPS = [
    # "NVIDIA H100 80GB HBM3" is the SXM card's name; PCIe and NVL say so
    ("H200", 989.0), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("A6000", 155.0),
    ("RTX 6000 Ada", 364.0), ("RTX 4090", 165.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0),
]

SECTION_TIMEOUT_S = {"extract": 420, "encode": 90, "train": 90}


def refuse_without_gpu() -> str | None:
    """Why this machine cannot run the check, or None when it can."""
    try:
        import torch
    except ImportError as e:
        return f"torch is not importable ({e})"
    if not torch.cuda.is_available():
        built = torch.version.cuda or "no CUDA (CPU-only build)"
        return (f"no CUDA GPU is visible: torch {torch.__version__} (built with {built}) reports "
                "torch.cuda.is_available() == False")
    return None


def card_peak_tflops(name: str) -> float | None:
    for pattern, peak in PEAK_BF16_TFLOPS:
        if pattern.lower() in name.lower():
            return peak
    return None


def prefill_flops_per_clip(model: dict, prompt_tokens: float, video_patches: float) -> dict[str, float]:
    """Matmul FLOPs (2 per multiply-add) of one clip's prefill: decoder over the prompt tokens
    (projections, MLP, causal attention) and the vision tower over the video's patches
    (attention within each temporal patch group, as Qwen3-VL's tower does), plus mergers."""
    t, v = model["text"], model["vision"]
    h, heads, kv, hd, inter, n_layers = (t[k] for k in ("hidden_size", "num_attention_heads", "num_key_value_heads",
                                                        "head_dim", "intermediate_size", "num_hidden_layers"))
    per_layer = h * heads * hd + 2 * h * kv * hd + heads * hd * h + 3 * h * inter
    text = 2 * per_layer * n_layers * prompt_tokens + 2 * 2 * n_layers * heads * hd * prompt_tokens ** 2 / 2
    vh, vi, depth = v["hidden_size"], v["intermediate_size"], v["depth"]
    group = model["patches_per_group"]
    vision = 2 * (4 * vh * vh + 2 * vh * vi) * depth * video_patches + 2 * 2 * depth * vh * group * video_patches
    merged = vh * model["spatial_merge"] ** 2
    n_mergers = 1 + len(v.get("deepstack_visual_indexes", []))
    mergers = 2 * (merged * merged + merged * v["out_hidden_size"]) * n_mergers * video_patches / model["spatial_merge"] ** 2
    return {"text": text, "vision": vision + mergers, "total": text + vision + mergers}


def run_section(name: str, cmd: list[str], timeout: int, workdir: Path) -> dict:
    """Run one section's command; its JSON result, or why there is none."""
    out = workdir / f"{name}.json"
    log = workdir / f"{name}.log"
    t0 = time.perf_counter()
    print(f"[gpu_check] {name}: {' '.join(cmd[1:])}", flush=True)
    try:
        with open(log, "w") as f:
            proc = subprocess.run([*cmd, "--json", str(out)], stdout=f, stderr=subprocess.STDOUT, timeout=timeout, cwd=HERE.parent)
        status = "ok" if proc.returncode == 0 and out.exists() else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        status = f"timed out after {timeout} s"
    result: dict = {"status": status, "seconds": round(time.perf_counter() - t0, 1)}
    if out.exists():
        result.update(json.loads(out.read_text()))
    if status != "ok":
        result["log_tail"] = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    print(f"[gpu_check] {name}: {status} in {result['seconds']} s", flush=True)
    return result


def extract_cmd(smoke: bool) -> list[str]:
    cmd = [sys.executable, str(HERE / "bench_capture.py"), "--rounds", "2"]
    if smoke:
        return [*cmd, "--clips", "2", "--clips-per-call", "2", "--frames", "4", "--frame-size", "32", "--max-new-tokens", "4"]
    return [*cmd, "--real-size", "--load-format", "dummy", "--dtype", "bfloat16", "--clips", "64", "--frames", "32",
            "--frame-size", "256", "--clips-per-call", "64", "--max-new-tokens", "16", "--sequential",
            "--gpu-memory-utilization", "0.8"]


def encode_cmd(smoke: bool) -> list[str]:
    cmd = [sys.executable, str(HERE / "bench_encode.py"), "--repeats", "3"]
    if smoke:
        return [*cmd, "--frames", "4", "--frame-size", "32", "--batch", "2", "--repeats", "1"]
    return [*cmd, "--real-size", "--frames", "32", "--frame-size", "256", "--batch", "8"]


def train_cmd(smoke: bool) -> list[str]:
    return [sys.executable, str(HERE / "gpu_check.py"), "--train-step", *(["--smoke"] if smoke else [])]


def train_step(smoke: bool, out: Path) -> None:
    """Time training steps of the reference-size model on random inputs of the real shapes."""
    import torch

    from thinkjepa.config import ModelConfig, TrainConfig
    from thinkjepa.train.losses import compute_loss
    from thinkjepa.train.model import ThinkJEPA
    from thinkjepa.train.schedule import param_groups

    if smoke:
        cfg = ModelConfig(pred_depth=2, pred_width=32, pred_heads=2, guidance_dim=16, film_hidden=32, head_hidden=32,
                          head_heads=4)
        b, tp, tf, p, d, layers, hidden, frames = 2, 2, 2, 4, 32, 3, 24, 4
    else:
        cfg = ModelConfig()
        b, tp, tf, p, d, layers, hidden, frames = 16, 16, 16, 256, 1024, 8, 2048, 32
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = ThinkJEPA(cfg, latent_dim=d, n_tubelets_past=tp, n_tubelets_future=tf, n_patches=p, guidance_layers=layers,
                      guidance_hidden=hidden, future_frames=frames, pretrained=False).to(dev).train()
    train_cfg = TrainConfig()
    opt = torch.optim.AdamW(param_groups(model, train_cfg), weight_decay=train_cfg.weight_decay)
    g = torch.Generator(device="cpu").manual_seed(0)
    pose = torch.eye(4).repeat(b, 1, 1)
    batch = {
        "past_latents": torch.randn(b, tp, p, d, generator=g), "future_latents": torch.randn(b, tf, p, d, generator=g),
        "target_joints": torch.randn(b, frames, 52, 3, generator=g), "target_conf": torch.rand(b, frames, 52, generator=g),
        "cam_pose": pose, "past_joints_cam": torch.randn(b, 52, 3, generator=g) * 0.1,
        "guid_prefill_mean": torch.randn(b, layers, hidden, generator=g),
        "guid_generated_mean": torch.randn(b, layers, hidden, generator=g),
    }
    batch = {k: v.to(dev) for k, v in batch.items()}
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")

    def step() -> float:
        with amp:
            out_ = model(batch)
        loss, _logs = compute_loss(out_, batch, train_cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up: allocator, kernels
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    n = 2 if smoke else 10
    t0 = time.perf_counter()
    for _ in range(n):
        loss = step()
    sync()
    seconds = (time.perf_counter() - t0) / n
    result = {
        "steps_per_s": 1 / seconds, "samples_per_s": b / seconds, "batch": b, "loss": loss,
        "params": sum(p_.numel() for p_ in model.parameters()),
        "shapes": {"past_latents": [b, tp, p, d], "guidance_means": [b, layers, hidden]},
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None,
        "precision": "bf16 autocast" if dev.type == "cuda" else "float32",
    }
    out.write_text(json.dumps(result, indent=2))


def add_flop_bound(extract: dict, peak_tflops: float | None) -> None:
    """The plain engine's clips/s against the card's prefill FLOP bound (in place)."""
    model = extract.get("model")
    if not model or "plain" not in extract:
        return
    flops = prefill_flops_per_clip(model, extract["prompt_tokens_per_clip"], extract["video_patches_per_clip"])
    extract["prefill_tflop_per_clip"] = {k: v / 1e12 for k, v in flops.items()}
    if peak_tflops:
        bound = peak_tflops * 1e12 / flops["total"]
        extract["prefill_flop_bound_clips_per_s"] = bound
        extract["plain_vs_flop_bound"] = extract["plain"]["clips_per_s"] / bound
        extract["capture_vs_flop_bound"] = extract["capture"]["clips_per_s"] / bound


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    p.add_argument("--sections", default="extract,encode,train", help="comma list of extract, encode, train")
    p.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak (default: from the device name)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on any device: checks the script, measures nothing")
    p.add_argument("--train-step", action="store_true", help=argparse.SUPPRESS)  # the train section's own process
    p.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()

    if not args.smoke:
        why = refuse_without_gpu()
        if why is not None:
            print(f"gpu_check: refusing to run: {why}. This check measures the CUDA path at reference size "
                  "(vLLM extraction with dummy weights, V-JEPA2 encoding, a training step) and means nothing "
                  "on CPU; run it on a machine with a CUDA GPU (--smoke runs the plumbing at tiny size anywhere).",
                  file=sys.stderr)
            sys.exit(REFUSAL_EXIT)
    if args.train_step:
        train_step(args.smoke, args.json)
        return

    import torch

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTION_TIMEOUT_S]
    if unknown:
        p.error(f"unknown sections {unknown}; choose from {list(SECTION_TIMEOUT_S)}")
    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})"
    peak = args.peak_tflops or (card_peak_tflops(name) if cuda else None)
    report: dict = {
        "device": name, "device_count": torch.cuda.device_count() if cuda else 0, "torch": torch.__version__,
        "cuda": torch.version.cuda, "peak_bf16_tflops": peak, "smoke": args.smoke,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        import vllm

        report["vllm"] = vllm.__version__
    except ImportError:
        report["vllm"] = None
    commands = {"extract": extract_cmd, "encode": encode_cmd, "train": train_cmd}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for s in sections:
            report[s] = run_section(s, commands[s](args.smoke), SECTION_TIMEOUT_S[s], Path(tmp))
            if s == "extract":
                add_flop_bound(report[s], peak)
            args.out.write_text(json.dumps(report, indent=2))  # a later section's failure keeps these
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"[gpu_check] wrote {args.out} ({report['total_seconds']} s)")
    failed = [s for s in sections if report[s]["status"] != "ok"]
    if failed:
        print(f"[gpu_check] sections that failed: {failed} (see log_tail in the JSON)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

"""benchmarks/gpu_check.sh: refuses on CPU; its FLOP model and train step hold up on CPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.sh"


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow  # spawns processes (several seconds on 2 cores): full suite only
@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is the CPU behaviour; a GPU machine runs the check")
def test_refuses_clearly_on_cpu_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(["bash", str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 2, proc.stderr
    assert "refusing to run" in proc.stderr and "torch.cuda.is_available() == False" in proc.stderr
    assert not out.exists()


def test_prefill_flops_count_the_real_models_matmul_weights(tmp_path):
    """Without attention terms, prefill FLOPs are 2 x (decoder / vision-block matmul weights)
    per token / patch; the counts must match the transformers model built from the config."""
    from transformers import AutoConfig, Qwen3VLForConditionalGeneration

    from thinkjepa.tiny.qwen3vl import build_tiny_qwen3vl_thinking

    cfg = AutoConfig.from_pretrained(build_tiny_qwen3vl_thinking(tmp_path / "m", seed=0))
    model = Qwen3VLForConditionalGeneration(cfg)
    lm, vis = model.model.language_model, model.model.visual
    text_w = sum(m.weight.numel() for m in lm.layers.modules() if isinstance(m, torch.nn.Linear))
    block_w = sum(m.weight.numel() for m in vis.blocks.modules() if isinstance(m, torch.nn.Linear))
    gc = _gpu_check()
    dims = {"text": cfg.text_config.to_dict(), "vision": cfg.vision_config.to_dict(),
            "spatial_merge": cfg.vision_config.spatial_merge_size, "patches_per_group": 0}
    one = gc.prefill_flops_per_clip(dims, prompt_tokens=1, video_patches=0)
    assert one["text"] == pytest.approx(2 * text_w + 2 * cfg.text_config.num_hidden_layers
                                        * cfg.text_config.num_attention_heads * cfg.text_config.head_dim)
    two = gc.prefill_flops_per_clip(dims, prompt_tokens=0, video_patches=1)
    mergers = two["vision"] - 2 * block_w
    assert mergers > 0 and two["vision"] == pytest.approx(2 * block_w + mergers)
    merger_w = sum(m.weight.numel() for m in vis.merger.modules() if isinstance(m, torch.nn.Linear))
    n_mergers = 1 + len(cfg.vision_config.deepstack_visual_indexes)
    assert mergers == pytest.approx(2 * merger_w * n_mergers / cfg.vision_config.spatial_merge_size ** 2)


def test_card_peak_lookup_prefers_the_specific_name():
    gc = _gpu_check()
    assert gc.card_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gc.card_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gc.card_peak_tflops("NVIDIA H200") == 989.0 and gc.card_peak_tflops("NVIDIA A10G") == 70.0
    assert gc.card_peak_tflops("Some Future Card") is None


@pytest.mark.slow  # spawns processes (several seconds on 2 cores): full suite only
def test_train_section_smoke_writes_its_figures(tmp_path):
    out = tmp_path / "train.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_check.py"), "--train-step", "--smoke",
                           "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(out.read_text())
    assert got["steps_per_s"] > 0 and got["batch"] == 2 and got["params"] > 0
    assert got["shapes"]["past_latents"] == [2, 2, 4, 32]

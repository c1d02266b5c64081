"""A tiny random V-JEPA2 checkpoint for tests and the demo.

Built with the real transformers classes and written with ``save_pretrained`` (config,
safetensors weights, video processor config), so the encode stage loads it exactly like a hub
id (``VJEPA2Model.from_pretrained`` / ``AutoVideoProcessor.from_pretrained``) with
``HF_HUB_OFFLINE=1``. Random weights are enough: the pipeline's contracts (shapes, causality,
caching) do not depend on what the encoder learned.
"""

from __future__ import annotations

from pathlib import Path

# The default tiny predictor width; the demo config's ``model.pred_width`` uses the same value
# so ``model.init_predictor_from`` can point at this checkpoint.
TINY_PRED_WIDTH = 64


def build_tiny_vjepa2(
    out: str | Path,
    *,
    frames_per_clip: int = 8,
    crop_size: int = 64,
    patch_size: int = 16,
    tubelet_size: int = 2,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    pred_hidden_size: int = TINY_PRED_WIDTH,
    pred_layers: int = 2,
    pred_heads: int = 4,
    seed: int = 0,
) -> Path:
    """Write a random ``VJEPA2Model`` and its video processor to ``out``; returns ``out``.

    ``frames_per_clip`` should cover the longest window the encoder sees (the predictor's
    position table is sized from it); ``crop_size`` is the processor's output size.
    """
    import torch
    from transformers import VJEPA2Config, VJEPA2Model, VJEPA2VideoProcessor

    if crop_size % patch_size:
        raise ValueError(f"crop_size {crop_size} must be a multiple of patch_size {patch_size}")
    if frames_per_clip < tubelet_size:
        raise ValueError(f"frames_per_clip {frames_per_clip} is shorter than one tubelet ({tubelet_size})")
    out = Path(out)
    config = VJEPA2Config(
        patch_size=patch_size,
        crop_size=crop_size,
        frames_per_clip=frames_per_clip,
        tubelet_size=tubelet_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        mlp_ratio=2.0,
        num_pooler_layers=1,
        pred_hidden_size=pred_hidden_size,
        pred_num_hidden_layers=pred_layers,
        pred_num_attention_heads=pred_heads,
        pred_mlp_ratio=2.0,
    )
    # Seed a private generator-free scope: building must not disturb the caller's RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VJEPA2Model(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    VJEPA2VideoProcessor(crop_size=crop_size).save_pretrained(out)
    return out


__all__ = ["TINY_PRED_WIDTH", "build_tiny_vjepa2"]

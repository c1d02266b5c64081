"""The tiny Qwen3-VL Thinking checkpoint: loads like a hub id, Qwen's tokens and template,
constraints the engines need, deterministic per seed."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from thinkjepa.tiny.qwen3vl import SPECIAL_TOKENS, THINK_TOKENS, build_tiny_qwen3vl_thinking


def _digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_loads_through_the_hub_code_path(tiny_qwen_dir):
    from transformers import AutoConfig, AutoProcessor, Qwen3VLForConditionalGeneration

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    config = AutoConfig.from_pretrained(tiny_qwen_dir)
    text, vision = config.text_config, config.vision_config
    assert config.architectures == ["Qwen3VLForConditionalGeneration"]
    assert text.head_dim == 32  # vLLM's CPU attention rejects 16
    assert sum(text.rope_parameters["mrope_section"]) == text.head_dim // 2
    assert all(0 <= i < vision.depth for i in vision.deepstack_visual_indexes)
    processor = AutoProcessor.from_pretrained(tiny_qwen_dir)
    tok = processor.tokenizer
    for t in SPECIAL_TOKENS + THINK_TOKENS:
        ids = tok.encode(t, add_special_tokens=False)
        assert len(ids) == 1, f"{t} is not a single token"
    assert config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert config.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    assert len(tok) <= text.vocab_size
    # <think> survives decoding without special tokens, as in Qwen's tokenizer.
    ids = tok.encode("<think>\nokay</think>", add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == "<think>\nokay</think>"
    msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe this video."}]}]
    prompt = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Describe this video.<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n"
    )
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_qwen_dir)
    assert model.config.text_config.num_hidden_layers == 4
    # The video processor keeps 64 px frames at 64 px: 2x2 merged tokens per frame pair.
    frames = np.zeros((8, 64, 64, 3), np.uint8)
    meta = {"fps": 30.0, "duration": 1.0, "total_num_frames": 48, "frames_indices": list(range(0, 48, 6))}
    out = processor(text=[prompt], videos=[frames], video_metadata=[meta], do_sample_frames=False, return_tensors="pt")
    assert out["video_grid_thw"].tolist() == [[4, 4, 4]]
    assert "<0.1 seconds>" in tok.decode(out["input_ids"][0])  # timestamps from the metadata


def test_same_seed_same_files_other_seed_other_weights(tmp_path):
    a = build_tiny_qwen3vl_thinking(tmp_path / "a", seed=3, num_layers=2, vision_depth=2, deepstack_visual_indexes=(0,))
    b = build_tiny_qwen3vl_thinking(tmp_path / "b", seed=3, num_layers=2, vision_depth=2, deepstack_visual_indexes=(0,))
    c = build_tiny_qwen3vl_thinking(tmp_path / "c", seed=4, num_layers=2, vision_depth=2, deepstack_visual_indexes=(0,))
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert da == db
    assert da["model.safetensors"] != dc["model.safetensors"]
    assert json.loads((a / "config.json").read_text())["text_config"]["num_hidden_layers"] == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(head_dim=16), "head_dim"),
        (dict(deepstack_visual_indexes=(0, 5)), "deepstack"),
    ],
)
def test_rejects_shapes_the_engines_cannot_run(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_tiny_qwen3vl_thinking(tmp_path / "m", **kwargs)

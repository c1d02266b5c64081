"""A tiny random Qwen3-VL "Thinking" checkpoint for tests and the demo.

Everything a hub checkpoint of ``Qwen/Qwen3-VL-2B-Thinking`` brings is here in miniature and
written with ``save_pretrained``: config, safetensors weights, generation config, a byte-level
BPE tokenizer with Qwen's special tokens (``<|im_start|>``, ``<|vision_start|>``,
``<|video_pad|>``, ``<think>`` ...), the chat template of the Thinking models (the generation
prompt opens ``<think>``), and the image and video processor configs. The folder therefore
loads through exactly the code path of a hub id (``from_pretrained`` / ``LLM(model=path)``)
with ``HF_HUB_OFFLINE=1``.

Shape constraints that the real engines impose (docs/reference.md §4-5): vLLM's CPU attention needs
a head_dim of 32 or more; ``mrope_section`` must sum to head_dim/2; the deepstack indexes
must lie inside the vision depth. The same seed always gives the same files' contents.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# The chat template of the Qwen3-VL Thinking models, reduced to what a thinker prompt uses
# (system / user / assistant turns with text, image and video items). Media items render as
# Qwen's placeholders; the generation prompt opens the thinking block, as the real template does.
QWEN3VL_THINKING_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' or 'image' in item or 'image_url' in item -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'video' or 'video' in item -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in item -%}"
    "{{- item['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n<think>\\n' -}}"
    "{%- endif -%}"
)

# Qwen's special tokens, in the order of the real vocabulary's added tokens.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Added but not special, as in Qwen's tokenizer: they survive skip_special_tokens.
THINK_TOKENS = ["<think>", "</think>"]

# Qwen2's pre-tokenisation regex (numbers split digit by digit, contractions, words, spaces).
_QWEN_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

_WORDS = (
    "describe this video task scene environment the a an of in on with and to is are was "
    "person hand hands left right object objects table cloth background picks places moves "
    "holds opens closes sort beads cup bowl box bottle pour stack fold towel wipe put take "
    "user assistant think thinking okay so let me look at frames seconds first then next "
    "seems like probably shows someone manipulating tabletop kitchen white wooden black "
    "unknown unspecified position front center camera egocentric view motion trajectory"
).split()


def _tokenizer_corpus(seed: int, n_lines: int = 400) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
        stamp = f"<{rng.randint(0, 99) / 10:.1f} seconds>"
        lines.append(f"{stamp} " + " ".join(words).capitalize() + rng.choice([".", ",", "?", ":"]))
    return lines


def _build_tokenizer(seed: int, vocab_size: int, chat_template: str):
    """Train a small byte-level BPE with Qwen's pre-tokeniser and wrap it as Qwen2Tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AddedToken, Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    bpe.train_from_iterator(_tokenizer_corpus(seed), trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]

    tok = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        errors="replace",
        add_prefix_space=False,
        model_max_length=262144,
    )
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS], special_tokens=True)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    tok.chat_template = chat_template
    return tok


def engine_dtype(compute_dtype: str) -> str:
    """The dtype vLLM computes a tiny checkpoint in for ``thinker.compute_dtype``: ``auto``
    gives bfloat16 on CPU and GPU (vLLM downcasts float32 checkpoints)."""
    return "bfloat16" if compute_dtype == "auto" else compute_dtype


def build_tiny_qwen3vl_thinking(
    out_dir: str | Path,
    seed: int = 0,
    *,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    head_dim: int = 32,
    intermediate_size: int = 256,
    vision_depth: int = 3,
    vision_hidden_size: int = 64,
    vision_heads: int = 2,
    deepstack_visual_indexes: tuple[int, ...] = (0, 1, 2),
    bpe_vocab_size: int = 480,
    max_position_embeddings: int = 8192,
    dtype: str = "float32",
) -> Path:
    """Write a random Qwen3-VL Thinking-style checkpoint to ``out_dir``; returns the path.

    ``dtype``: the weights' (and config's) dtype. Save in the dtype the engine computes in
    (``engine_dtype``): vLLM's ``dtype=auto`` turns a float32 checkpoint into bfloat16 and
    warns once per weight that it casts.

    Defaults: 4 decoder layers of width 128 (head_dim 32), a 3-block vision tower whose
    every block feeds deepstack features into decoder layers 0-2, patch 16, merge 2,
    temporal patch 2 (a 64x64 frame pair gives 4 vision tokens).
    """
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    if head_dim % 2 or head_dim < 32:
        raise ValueError(f"head_dim {head_dim}: vLLM's CPU attention needs an even head_dim >= 32")
    if any(not 0 <= i < vision_depth for i in deepstack_visual_indexes):
        raise ValueError(f"deepstack_visual_indexes {deepstack_visual_indexes} must lie inside the vision depth {vision_depth}")
    if len(deepstack_visual_indexes) > num_layers:
        raise ValueError("more deepstack levels than decoder layers")
    if vision_hidden_size % vision_heads:
        raise ValueError("vision_hidden_size must be a multiple of vision_heads")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tok = _build_tokenizer(seed, bpe_vocab_size, QWEN3VL_THINKING_CHAT_TEMPLATE)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS + THINK_TOKENS}
    # Rounded up like real checkpoints pad their embedding tables.
    vocab_size = -(-len(tok) // 64) * 64

    # mrope splits head_dim/2 rotary frequencies over (time, height, width); Qwen3-VL-2B uses
    # [24, 20, 20] of 64. Same proportions here.
    half = head_dim // 2
    hw = (half * 20) // 64
    mrope_section = [half - 2 * hw, hw, hw]

    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads,
            head_dim=head_dim,
            hidden_act="silu",
            max_position_embeddings=max_position_embeddings,
            rms_norm_eps=1e-6,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": mrope_section,
                "mrope_interleaved": True,
            },
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            dtype=dtype,
        ),
        vision_config=dict(
            depth=vision_depth,
            hidden_size=vision_hidden_size,
            intermediate_size=2 * vision_hidden_size,
            num_heads=vision_heads,
            in_channels=3,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=hidden_size,
            # 16x16 learned positions, interpolated to the actual patch grid (256 px frames).
            num_position_embeddings=256,
            deepstack_visual_indexes=list(deepstack_visual_indexes),
            hidden_act="gelu_pytorch_tanh",
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        # Untied: with tied random embeddings the argmax just repeats the input token.
        tie_word_embeddings=False,
        dtype=dtype,
    )
    config.architectures = ["Qwen3VLForConditionalGeneration"]

    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval().to(getattr(torch, dtype))
    model.save_pretrained(out, safe_serialization=True)

    GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    ).save_pretrained(out)

    # Real Qwen3-VL processor settings: image/video normalised to [-1, 1] (mean=std=0.5),
    # bicubic resize to multiples of 32, pixel budgets wide enough that 64..256 px frames
    # keep their size.
    image_processor = Qwen2VLImageProcessor(
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": 65536, "longest_edge": 16777216},
    )
    video_processor = Qwen3VLVideoProcessor(
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": 4096, "longest_edge": 25165824},
        do_sample_frames=False,
        cap_pixels_per_frame=False,
    )
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=video_processor,
        chat_template=QWEN3VL_THINKING_CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    tok.save_pretrained(out)
    return out

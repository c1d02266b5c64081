"""What goes into and comes out of a thinker backend, and the input preparation both share.

Both backends (vLLM and transformers) build the prompt string with :func:`build_chat_prompt`
and the video metadata with :func:`video_metadata`, so they tokenize a clip identically: the
Qwen3-VL processor expands the single video placeholder into per-temporal-patch timestamp
text and ``<|video_pad|>`` runs, and those timestamps come from the metadata (without it
transformers assumes 24 fps and the tokens differ). :func:`finalize_output` turns what an
engine returned into the one output contract, whatever the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from thinkjepa.cache_schema.schema import TOKEN_TEXT, TOKEN_VISION

VIDEO_PLACEHOLDER = "<|vision_start|><|video_pad|><|vision_end|>"


@dataclass
class ThinkerRequest:
    """One window for the thinker."""

    key: str
    """Window id (the cache key)."""
    frames: np.ndarray
    """[T, H, W, 3] uint8, already resized to ``thinker.frame_size``."""
    frame_indices: list[int]
    """Source frame index of each frame (all < t)."""
    fps: float
    """Source video fps (Qwen's timestamps come from frame_index / fps)."""
    user_text: str
    """The filled prompt template."""


@dataclass
class ThinkerOutput:
    """Hidden states of one window, per stored layer (see extract/layers.py for the convention)."""

    key: str
    prefill: np.ndarray
    """[L, Np, H] float32: every prompt token (chat template, timestamps, video, text), the first
    ``max_prefill_tokens`` of them."""
    generated: np.ndarray
    """[L, Ng, H] float32: the generated tokens that were fed back (all but the last sampled one)."""
    prefill_ids: np.ndarray
    """[Np] int32."""
    generated_ids: np.ndarray
    """[Ng] int32: ids of the tokens whose states are in ``generated``."""
    all_generated_ids: np.ndarray
    """[Ng + 1] int32: every generated id, incl. the last sampled one (never fed back, so stateless)."""
    prefill_kind: np.ndarray
    """[Np] uint8: TOKEN_VISION for video/image pad tokens, TOKEN_TEXT otherwise."""
    frame_index: np.ndarray
    """[Np] int32: source frame of each vision token (first frame of its temporal patch), -1 else."""
    text: str
    """Decoded generated text (all generated ids, special tokens skipped)."""
    prompt: str
    """Full templated prompt string (before the processor expands the video placeholder)."""
    prompt_tokens: int = 0
    """Number of prompt tokens before truncation to ``max_prefill_tokens``."""


@runtime_checkable
class ThinkerBackend(Protocol):
    layers: list[int]
    layer_convention: str
    hidden_size: int
    model_id: str

    def extract(self, requests: list[ThinkerRequest]) -> list[ThinkerOutput | Exception]:
        """One output per request, in order; a request that fails gets its exception instead."""
        ...

    def close(self) -> None: ...


class ThinkerInputError(ValueError):
    """A request the thinker cannot take (bad frames, prompt too long, ...); names the window."""


def name_error(key: str, e: Exception) -> Exception:
    """``e`` itself when its message already names the window, else an error that does."""
    if key in str(e):
        return e
    err = type(e)(f"{key}: {e}") if type(e) in (ValueError, RuntimeError, TypeError) else RuntimeError(f"{key}: {type(e).__name__}: {e}")
    err.__cause__ = e
    return err


def check_request(req: ThinkerRequest) -> None:
    """Raise ThinkerInputError naming the window when the request is malformed."""
    f = req.frames
    if not isinstance(f, np.ndarray) or f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
        shape = getattr(f, "shape", None)
        dtype = getattr(f, "dtype", None)
        raise ThinkerInputError(f"{req.key}: frames must be a [T,H,W,3] uint8 array, got shape {shape} dtype {dtype}")
    if len(req.frame_indices) != f.shape[0]:
        raise ThinkerInputError(f"{req.key}: {f.shape[0]} frames but {len(req.frame_indices)} frame indices")
    if f.shape[0] == 0:
        raise ThinkerInputError(f"{req.key}: no frames")
    if any(b < a for a, b in zip(req.frame_indices, req.frame_indices[1:])):
        raise ThinkerInputError(f"{req.key}: frame indices {list(req.frame_indices)} are not in time order")
    if not req.fps or req.fps <= 0:
        raise ThinkerInputError(f"{req.key}: fps must be positive, got {req.fps}")


def chat_messages(user_text: str) -> list[dict[str, Any]]:
    """One user turn: the video, then the text (Qwen's own examples put media first)."""
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": user_text}]}]


def build_chat_prompt(templater: Any, user_text: str) -> str:
    """The full prompt string for one window, through the model's own chat template.

    ``templater`` is the checkpoint's processor or tokenizer (anything with
    ``apply_chat_template``). Qwen3-VL Thinking's template ends the generation prompt with an
    open ``<think>``, so the generated tokens are the thinking."""
    prompt = templater.apply_chat_template(chat_messages(user_text), tokenize=False, add_generation_prompt=True)
    if not isinstance(prompt, str):
        raise TypeError(f"chat template returned {type(prompt).__name__}, expected a string")
    if prompt.count(VIDEO_PLACEHOLDER) != 1:
        raise ValueError(
            f"the model's chat template did not render exactly one video placeholder {VIDEO_PLACEHOLDER!r} "
            f"for a video item (got {prompt!r}); is this a Qwen3-VL checkpoint?"
        )
    return prompt


def video_metadata(frame_indices: Sequence[int], fps: float) -> dict[str, Any]:
    """Metadata of pre-sampled frames, in the form vLLM's Qwen3-VL processor takes (docs/reference.md §4).

    ``do_sample_frames`` False: the frames are already the ones the thinker sees; the
    processor only uses ``frames_indices`` / ``fps`` for the timestamp text."""
    idx = [int(i) for i in frame_indices]
    total = idx[-1] + 1 if idx else 0
    return {
        "fps": float(fps),
        "duration": total / float(fps),
        "total_num_frames": total,
        "frames_indices": idx,
        "video_backend": "numpy",
        "do_sample_frames": False,
    }


def hf_video_metadata(frame_indices: Sequence[int], fps: float) -> dict[str, Any]:
    """The same metadata for transformers' processor (it takes no ``do_sample_frames`` key)."""
    meta = video_metadata(frame_indices, fps)
    meta.pop("do_sample_frames")
    return meta


def token_kinds(
    prefill_ids: np.ndarray,
    frame_indices: Sequence[int],
    *,
    vision_token_ids: Sequence[int],
    vision_end_id: int,
    temporal_patch_size: int,
    key: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """``prefill_kind`` and ``frame_index`` of a prompt.

    Qwen3-VL writes one ``<t seconds><|vision_start|><|video_pad|>*n<|vision_end|>`` group per
    temporal patch (``temporal_patch_size`` consecutive frames, the last frame repeated to fill
    an incomplete patch); a vision token gets the first source frame of its patch."""
    ids = np.asarray(prefill_ids)
    vision = np.isin(ids, np.asarray(list(vision_token_ids)))
    kind = np.where(vision, TOKEN_VISION, TOKEN_TEXT).astype(np.uint8)
    frame_index = np.full(ids.shape, -1, dtype=np.int32)
    n_groups = -(-len(frame_indices) // temporal_patch_size)
    group = 0
    in_run = False
    for pos, tok in enumerate(ids.tolist()):
        if vision[pos]:
            if group >= n_groups:
                raise ValueError(f"{key}: prompt has more vision-token groups than the {n_groups} temporal patches of its frames")
            frame_index[pos] = int(frame_indices[group * temporal_patch_size])
            in_run = True
        elif in_run and tok == vision_end_id:
            group += 1
            in_run = False
    if group != n_groups:
        raise ValueError(f"{key}: prompt has {group} vision-token groups, expected {n_groups} (one per temporal patch)")
    return kind, frame_index


@dataclass(frozen=True)
class ThinkerModelInfo:
    """Facts about a thinker checkpoint that both backends need before running it."""

    num_hidden_layers: int
    hidden_size: int
    vision_token_ids: tuple[int, ...]
    vision_end_id: int
    temporal_patch_size: int
    stop_token_ids: tuple[int, ...]


def load_model_info(model: str, revision: str | None, processor: Any) -> ThinkerModelInfo:
    """Read depth, width, special ids and stop ids from the checkpoint's config files."""
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(model, revision=revision)
    text = getattr(config, "text_config", config)
    vision_ids = tuple(int(getattr(config, k)) for k in ("video_token_id", "image_token_id") if getattr(config, k, None) is not None)
    if not vision_ids or getattr(config, "vision_end_token_id", None) is None:
        raise ValueError(f"{model}: config has no video/vision token ids; a Qwen3-VL checkpoint is expected")
    stop: list[int] = []
    try:
        gen = GenerationConfig.from_pretrained(model, revision=revision)
        eos = gen.eos_token_id
        stop += [eos] if isinstance(eos, int) else list(eos or [])
    except OSError:
        if (Path(model) / "generation_config.json").is_file():
            raise  # there but unreadable: its stop ids would be dropped silently
        # no generation_config.json: the tokenizer's eos alone
    tok = getattr(processor, "tokenizer", processor)
    if tok.eos_token_id is not None:
        stop.append(int(tok.eos_token_id))
    return ThinkerModelInfo(
        num_hidden_layers=int(text.num_hidden_layers),
        hidden_size=int(text.hidden_size),
        vision_token_ids=vision_ids,
        vision_end_id=int(config.vision_end_token_id),
        temporal_patch_size=int(processor.video_processor.temporal_patch_size),
        stop_token_ids=tuple(sorted(set(int(s) for s in stop))),
    )


def finalize_output(
    req: ThinkerRequest,
    *,
    prompt: str,
    prefill: np.ndarray,
    prefill_ids: np.ndarray,
    generated: np.ndarray,
    all_generated_ids: np.ndarray,
    text: str,
    max_prefill_tokens: int | None,
    info: ThinkerModelInfo,
) -> ThinkerOutput:
    """Assemble the output contract; truncates the prefill stream to ``max_prefill_tokens``
    (keeping the first tokens, as the reference code does) and checks shapes. Both backends
    end here, so token kinds and frame indices are derived the same way for each."""
    n_prompt = int(prefill_ids.shape[0])
    all_gen = np.asarray(all_generated_ids, dtype=np.int32)
    if prefill.shape[1] != n_prompt:
        raise RuntimeError(f"{req.key}: {prefill.shape[1]} prefill states for {n_prompt} prompt tokens")
    n_gen_states = max(len(all_gen) - 1, 0)
    if generated.shape[1] != n_gen_states:
        raise RuntimeError(f"{req.key}: {generated.shape[1]} generated states for {len(all_gen)} generated tokens")
    keep = n_prompt if max_prefill_tokens is None else min(n_prompt, int(max_prefill_tokens))
    kind, frame_index = token_kinds(
        prefill_ids,
        req.frame_indices,
        vision_token_ids=info.vision_token_ids,
        vision_end_id=info.vision_end_id,
        temporal_patch_size=info.temporal_patch_size,
        key=req.key,
    )
    return ThinkerOutput(
        key=req.key,
        prefill=np.ascontiguousarray(prefill[:, :keep], dtype=np.float32),
        generated=np.ascontiguousarray(generated, dtype=np.float32),
        prefill_ids=np.asarray(prefill_ids[:keep], dtype=np.int32),
        generated_ids=all_gen[:n_gen_states].copy(),
        all_generated_ids=all_gen,
        prefill_kind=kind[:keep].astype(np.uint8),
        frame_index=frame_index[:keep].astype(np.int32),
        text=text,
        prompt=prompt,
        prompt_tokens=n_prompt,
    )


def open_thinker(cfg: Any) -> tuple[Any, ThinkerModelInfo, list[int]]:
    """What every backend needs before its engine: the processor (prompts and token kinds are
    made with it in this process), the model's facts, and the validated stored layers."""
    from transformers import AutoProcessor

    from thinkjepa.extract.layers import validate_layers
    from thinkjepa.extract.model_files import naming_damaged_files

    with naming_damaged_files(cfg.model):
        processor = AutoProcessor.from_pretrained(cfg.model, revision=cfg.revision)
        info = load_model_info(cfg.model, cfg.revision, processor)
    return processor, info, validate_layers(cfg.layers, info.num_hidden_layers, cfg.model)

"""transformers thinker backend: the reference and small-scale path.

One clip at a time, as the reference code does: the processor builds the inputs, greedy
``generate`` runs, and forward pre-hooks record the stored layers at the points fixed in
extract/layers.py (the input of decoder layer i+1, or of the final norm) for the prefill
call and every decode step. Same output contract and same token ids as the vLLM backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from thinkjepa.config import ThinkerConfig
from thinkjepa.extract.layers import LAYER_CONVENTION, hf_capture_points
from thinkjepa.extract.thinker_io import (
    ThinkerOutput,
    ThinkerRequest,
    build_chat_prompt,
    check_request,
    finalize_output,
    hf_video_metadata,
    name_error,
    open_thinker,
)


def _torch_dtype(name: str):
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


class TransformersThinker:
    """Qwen3-VL through transformers, per-clip greedy generate with hooks."""

    layer_convention = LAYER_CONVENTION
    capture = "hooks"
    """Forward pre-hooks on the decoder layers (extract/layers.py), recorded in entry provenance."""

    def __init__(self, cfg: ThinkerConfig, *, device: str | None = None) -> None:
        import torch
        from transformers import AutoConfig, Qwen3VLForConditionalGeneration

        self.cfg = cfg
        self.model_id = cfg.model
        self.processor, self.info, self.layers = open_thinker(cfg)
        self.hidden_size = self.info.hidden_size
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if cfg.load_format == "dummy":
            # Random weights of the real size, like vLLM's load_format="dummy" (benchmarks).
            config = AutoConfig.from_pretrained(cfg.model, revision=cfg.revision)
            dtype = _torch_dtype(cfg.compute_dtype)
            if dtype == "auto":
                dtype = getattr(config, "dtype", None) or torch.float32
            self.model = Qwen3VLForConditionalGeneration._from_config(config, dtype=dtype)
        else:
            self.model = Qwen3VLForConditionalGeneration.from_pretrained(
                cfg.model, revision=cfg.revision, dtype=_torch_dtype(cfg.compute_dtype)
            )
        self.model.to(self.device).eval()
        lm = self.model.model.language_model
        # Hooks record only inside extract(), so the model can be used directly meanwhile.
        self._recording = False
        self._captures: list[list[Any]] = [[] for _ in self.layers]
        self._hooks = []
        for slot, point in enumerate(hf_capture_points(self.layers, self.info.num_hidden_layers)):
            module = lm.layers[point.index] if point.module == "layer" else lm.norm
            self._hooks.append(module.register_forward_pre_hook(self._make_hook(slot), with_kwargs=True))

    def _make_hook(self, slot: int):
        def hook(module, args, kwargs):
            if not self._recording:
                return
            hidden = args[0] if args else kwargs["hidden_states"]
            self._captures[slot].append(hidden.detach()[0].float().cpu())

        return hook

    def extract(self, requests: list[ThinkerRequest]) -> list[ThinkerOutput | Exception]:
        results: list[ThinkerOutput | Exception] = []
        for req in requests:
            for c in self._captures:
                c.clear()
            self._recording = True
            try:
                results.append(self._extract_one(req))
            except Exception as e:  # one bad clip must not take the batch down
                results.append(name_error(req.key, e))
            finally:
                self._recording = False
                for c in self._captures:
                    c.clear()
        return results

    def _extract_one(self, req: ThinkerRequest) -> ThinkerOutput:
        import torch

        check_request(req)
        prompt = build_chat_prompt(self.processor, req.user_text)
        inputs = self.processor(
            text=[prompt],
            videos=[req.frames],
            video_metadata=[hf_video_metadata(req.frame_indices, req.fps)],
            do_sample_frames=False,
            return_tensors="pt",
        ).to(self.device)
        prompt_ids = inputs["input_ids"][0].cpu().numpy()
        n_prompt = len(prompt_ids)
        limit = self.cfg.max_model_len or getattr(self.model.config.text_config, "max_position_embeddings", None)
        if limit is not None and n_prompt + 1 > limit:
            raise ValueError(f"{req.key}: prompt of {n_prompt} tokens is too long for the context ({limit} tokens)")
        pad = self.processor.tokenizer.pad_token_id
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=self.cfg.max_new_tokens,
                do_sample=False,
                eos_token_id=list(self.info.stop_token_ids),
                pad_token_id=pad if pad is not None else self.info.stop_token_ids[0],
            )
        all_gen = out[0, n_prompt:].cpu().numpy()
        # Forward calls: the prefill, then one per generated token fed back (all but the last).
        calls = [len(c) for c in self._captures]
        if len(set(calls)) != 1 or calls[0] != max(len(all_gen), 1):
            raise RuntimeError(f"{req.key}: captured {calls} forward calls for {len(all_gen)} generated tokens")
        prefill = np.stack([c[0].numpy() for c in self._captures])
        if len(all_gen) > 1:
            generated = np.stack([torch.cat(c[1:], dim=0).numpy() for c in self._captures])
        else:
            generated = np.zeros((len(self.layers), 0, self.hidden_size), np.float32)
        return finalize_output(
            req,
            prompt=prompt,
            prefill=prefill,
            prefill_ids=prompt_ids,
            generated=generated,
            all_generated_ids=all_gen,
            text=self.processor.tokenizer.decode(all_gen.tolist(), skip_special_tokens=True),
            max_prefill_tokens=self.cfg.max_prefill_tokens,
            info=self.info,
        )

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self.model = None

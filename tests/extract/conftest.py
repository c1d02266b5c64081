"""Fixtures of the extraction tests: one tiny Qwen3-VL Thinking checkpoint and at most one
vLLM engine per test session (engine start-up is the slow part on 2 CPU cores)."""

from __future__ import annotations

from pathlib import Path

import pytest

from thinkjepa.config import ThinkerConfig

TINY_LAYERS = [0, 1, 2, 3]
"""Every decoder layer of the tiny thinker: 0-2 receive deepstack features, 3 is the last."""


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen3-VL Thinking checkpoint folder (seed 0), loadable like a hub id."""
    from thinkjepa.tiny.qwen3vl import build_tiny_qwen3vl_thinking

    return build_tiny_qwen3vl_thinking(tmp_path_factory.mktemp("tiny-qwen3vl") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_thinker_cfg(tiny_qwen_dir) -> ThinkerConfig:
    """Thinker settings for the tiny checkpoint: fp32, 64 px frames, a short context so a
    long clip can be refused."""
    return ThinkerConfig(
        model=str(tiny_qwen_dir),
        backend="vllm",
        layers=TINY_LAYERS,
        frame_size=64,
        max_new_tokens=6,
        compute_dtype="float32",
        max_model_len=512,
        max_prefill_tokens=1280,
    )


@pytest.fixture(scope="session")
def vllm_thinker(tiny_thinker_cfg):
    """The session's one vLLM engine on the tiny checkpoint (built through make_backend)."""
    from thinkjepa.extract.backends import make_backend

    backend = make_backend(tiny_thinker_cfg)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def hf_thinker(tiny_thinker_cfg):
    """The transformers backend on the same checkpoint and settings."""
    import torch

    from thinkjepa.extract.backends import make_backend

    torch.set_num_threads(2)
    backend = make_backend(tiny_thinker_cfg.model_copy(update={"backend": "transformers"}), device="cpu")
    yield backend
    backend.close()

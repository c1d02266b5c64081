"""Pick the thinker backend named by ``thinker.backend``.

Both backends satisfy :class:`thinkjepa.extract.thinker_io.ThinkerBackend` and give the same
token ids and (to float tolerance) the same hidden states; see tests/extract/test_backends.py.
"""

from __future__ import annotations

from typing import Any

from thinkjepa.config import ThinkerConfig
from thinkjepa.extract.thinker_io import ThinkerBackend

BACKENDS = ("vllm", "transformers")


def make_backend(thinker_cfg: ThinkerConfig, **kwargs: Any) -> ThinkerBackend:
    """Load the thinker named by ``thinker_cfg.model`` with ``thinker_cfg.backend``.

    ``kwargs`` go to the backend's constructor (vLLM: ``engine_kwargs`` for extra ``LLM``
    arguments; transformers: ``device``). vLLM starts child processes: call this under an
    ``if __name__ == "__main__":`` guard in scripts."""
    if thinker_cfg.backend == "vllm":
        from thinkjepa.extract.backend_vllm import VLLMThinker

        return VLLMThinker(thinker_cfg, **kwargs)
    if thinker_cfg.backend == "transformers":
        from thinkjepa.extract.backend_hf import TransformersThinker

        return TransformersThinker(thinker_cfg, **kwargs)
    raise ValueError(f"thinker.backend {thinker_cfg.backend!r} is not one of {BACKENDS}")

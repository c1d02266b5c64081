"""Extraction fingerprint of one cache entry: everything its stored arrays depend on.

The runner skips a window whose entry was committed with the same fingerprint and redoes it
when anything below changed (the entry is *stale*). Settings that change the shape of the
whole store (layers, convention, hidden size, storage dtype) are also checked by
``StoreMeta``; they are in the fingerprint as well so an entry stands on its own.
The episode's content fingerprint is in it too, so an edited video or HDF5 makes exactly
that episode's windows stale. Things that do not change the numbers (clips per call, tensor parallelism, memory
settings) are deliberately left out: changing them must not trigger a re-extraction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from thinkjepa.cache_schema import SCHEMA_VERSION
from thinkjepa.config import ThinkerConfig

FINGERPRINT_VERSION = 2
"""Bump when the extraction code changes what it stores for the same settings.
2: the episode's content fingerprint (``thinkjepa.data.content``) is part of it."""


def fingerprint_payload(
    thinker: ThinkerConfig,
    *,
    layer_convention: str,
    user_text: str,
    frame_indices: Sequence[int],
    episode: str = "",
) -> dict[str, Any]:
    """The fields hashed by ``entry_fingerprint`` (also kept in the entry's provenance)."""
    return {
        "fingerprint_version": FINGERPRINT_VERSION,
        "schema_version": SCHEMA_VERSION,
        "backend": thinker.backend,
        "model": thinker.model,
        "revision": thinker.revision,
        "layers": [int(x) for x in thinker.layers],
        "layer_convention": layer_convention,
        "compute_dtype": thinker.compute_dtype,
        "storage_dtype": thinker.storage_dtype,
        "frame_size": thinker.frame_size,
        "max_new_tokens": thinker.max_new_tokens,
        "max_prefill_tokens": thinker.max_prefill_tokens,
        "prompt_template": thinker.prompt_template,
        "user_text": user_text,
        "frame_indices": [int(x) for x in frame_indices],
        "episode": episode,
    }


def entry_fingerprint(
    thinker: ThinkerConfig,
    *,
    layer_convention: str,
    user_text: str,
    frame_indices: Sequence[int],
    episode: str = "",
) -> str:
    """Stable hex digest of ``fingerprint_payload``."""
    payload = fingerprint_payload(
        thinker, layer_convention=layer_convention, user_text=user_text, frame_indices=frame_indices, episode=episode
    )
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:24]

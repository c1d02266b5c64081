"""Extraction fingerprint of one cache entry: everything its stored arrays depend on.

The runner skips a window whose entry was committed with the same fingerprint and redoes it
when anything below changed (the entry is *stale*). Settings that change the shape of the
whole store (layers, convention, hidden size, storage dtype) are also checked by
``StoreMeta``; they are in the fingerprint as well so an entry stands on its own.
Things that do not change the numbers (clips per call, tensor parallelism, memory
settings) are deliberately left out: changing them must not trigger a re-extraction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from thinkjepa.cache_schema import SCHEMA_VERSION
from thinkjepa.config import ThinkerConfig

FINGERPRINT_VERSION = 1
"""Bump when the extraction code changes what it stores for the same settings."""


def fingerprint_payload(
    thinker: ThinkerConfig,
    *,
    layer_convention: str,
    user_text: str,
    frame_indices: Sequence[int],
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
    }


def entry_fingerprint(
    thinker: ThinkerConfig,
    *,
    layer_convention: str,
    user_text: str,
    frame_indices: Sequence[int],
) -> str:
    """Stable hex digest of ``fingerprint_payload``."""
    payload = fingerprint_payload(
        thinker, layer_convention=layer_convention, user_text=user_text, frame_indices=frame_indices
    )
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:24]


class Fingerprinter:
    """``entry_fingerprint`` for many windows of one config at a fraction of the cost (planning
    a 100k-clip manifest): the JSON of the fixed fields is made once and the two per-window
    fields are spliced in, giving byte-for-byte the same text and so the same digest."""

    _MARK_FRAMES = "\x00frames\x00"
    _MARK_TEXT = "\x00text\x00"

    def __init__(self, thinker: ThinkerConfig, *, layer_convention: str) -> None:
        payload = fingerprint_payload(thinker, layer_convention=layer_convention, user_text=self._MARK_TEXT,
                                      frame_indices=[])
        payload["frame_indices"] = self._MARK_FRAMES
        text = json.dumps(payload, sort_keys=True)
        head, rest = text.split(json.dumps(self._MARK_FRAMES))
        middle, tail = rest.split(json.dumps(self._MARK_TEXT))
        self._parts = (head, middle, tail)

    def __call__(self, *, user_text: str, frame_indices: Sequence[int]) -> str:
        head, middle, tail = self._parts
        text = head + json.dumps([int(x) for x in frame_indices]) + middle + json.dumps(user_text) + tail
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]

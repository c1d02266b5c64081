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
from collections.abc import Callable, Sequence
from typing import Any

from thinkjepa.cache_schema import SCHEMA_VERSION
from thinkjepa.config import ThinkerConfig
from thinkjepa.provenance import model_key, stage_fingerprint

FINGERPRINT_VERSION = 3
"""Bump when the extraction code changes what it stores for the same settings.
2: the episode's content fingerprint (``thinkjepa.data.content``) is part of it.
3: the stage fingerprint (code, engines, model identity: ``thinkjepa.provenance``) is part of it."""


def fingerprint_payload(
    thinker: ThinkerConfig,
    *,
    layer_convention: str,
    user_text: str,
    frame_indices: Sequence[int],
    episode: str = "",
) -> dict[str, Any]:
    """The fields hashed by ``vlm_entry_fingerprint`` (also kept in the entry's provenance)."""
    return {
        "fingerprint_version": FINGERPRINT_VERSION,
        "schema_version": SCHEMA_VERSION,
        "backend": thinker.backend,
        "model": model_key(thinker.model),  # a local folder by content, not its path
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
        # the extraction code, engines and the thinker's identity (thinkjepa.provenance)
        "stage": stage_fingerprint("extract", {"thinker": (thinker.model, thinker.revision)}),
    }


def vlm_entry_fingerprint(
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


def spliced_json(payload: dict[str, Any], fields: Sequence[str]) -> Callable[[dict[str, str]], str]:
    """``json.dumps(payload, sort_keys=True)`` with ``fields`` filled per call: the returned
    function takes each field's JSON text and gives byte for byte the text of the payload with
    those values. For fingerprinting many windows of one config: the fixed fields are dumped
    once."""
    marks = {f: f"\x00{f}\x00" for f in fields}
    text = json.dumps({**payload, **marks}, sort_keys=True)
    # the fixed text between the per-window fields, in the order sort_keys puts them
    order = sorted(fields, key=lambda f: text.index(json.dumps(marks[f])))
    parts = []
    for f in order:
        head, text = text.split(json.dumps(marks[f]))
        parts.append(head)
    tail = text

    def fill(values: dict[str, str]) -> str:
        return "".join(part + values[f] for part, f in zip(parts, order)) + tail

    return fill


class Fingerprinter:
    """``vlm_entry_fingerprint`` for many windows of one config at a fraction of the cost (planning
    a 100k-clip manifest): the JSON of the fixed fields is made once and the per-window fields
    (frames, user text, episode) are spliced in (``spliced_json``), giving byte-for-byte the
    same text and so the same digest."""

    def __init__(self, thinker: ThinkerConfig, *, layer_convention: str) -> None:
        payload = fingerprint_payload(thinker, layer_convention=layer_convention, user_text="", frame_indices=[])
        self._fill = spliced_json(payload, ("frame_indices", "user_text", "episode"))
        # JSON of the values seen last / so far: a clip's windows share its text and episode,
        # and every clip of one length has the same frame lists
        self._frames: dict[tuple[int, ...], str] = {}
        self._last: dict[str, tuple[str, str]] = {}

    def _json(self, field: str, value: str) -> str:
        last = self._last.get(field)
        if last is None or last[0] != value:
            last = self._last[field] = (value, json.dumps(value))
        return last[1]

    def __call__(self, *, user_text: str, frame_indices: Sequence[int], episode: str = "") -> str:
        frames = tuple(int(x) for x in frame_indices)
        frames_json = self._frames.get(frames)
        if frames_json is None:
            if len(self._frames) >= 4096:  # frame lists drawn per clip: keep it bounded
                self._frames.clear()
            frames_json = self._frames[frames] = json.dumps(list(frames))
        text = self._fill({"frame_indices": frames_json, "user_text": self._json("user_text", user_text),
                           "episode": self._json("episode", episode)})
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]

"""The thinker's user prompt: ``thinker.prompt_template`` filled from clip metadata.

The template may use the fields in ``PROMPT_FIELDS``. EgoDex metadata is uneven (some
episodes have no ``description``, lists come as arrays, missing values as the string
"None"), so every field falls back to something sensible and a clip never fails for lack of
metadata. An unknown field in the template is a configuration error, reported before any
clip is processed.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py

PROMPT_FIELDS: dict[str, str] = {
    "task": "the task name (EgoDex `task` attribute, else the task folder name)",
    "description": "what happens in the episode (`description`, else the LLM description)",
    "environment": "scene attributes (`environment`, e.g. tablecloth, background, position)",
    "llm_description": "the dataset's LLM-written description (else `description`)",
    "objects": "objects involved (`llm_objects`, else `object`)",
    "verbs": "actions (`llm_verbs`)",
    "clip_id": "<task folder>/<episode>",
}

DEFAULTS: dict[str, str] = {
    "task": "unknown task",
    "description": "a person manipulating objects with their hands",
    "environment": "unspecified",
    "llm_description": "a person manipulating objects with their hands",
    "objects": "unspecified",
    "verbs": "unspecified",
    "clip_id": "unknown clip",
}

# Where each field is looked up in the metadata, first non-empty wins.
_SOURCES: dict[str, tuple[str, ...]] = {
    "task": ("task",),
    "description": ("description", "llm_description"),
    "environment": ("environment",),
    "llm_description": ("llm_description", "description"),
    "objects": ("objects", "llm_objects", "object"),
    "verbs": ("verbs", "llm_verbs"),
    "clip_id": ("clip_id",),
}


METADATA_KEYS: tuple[str, ...] = tuple(sorted({k for keys in _SOURCES.values() for k in keys}))
"""The metadata keys any prompt field can come from."""


def prompt_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The part of a clip's metadata prompts can use, as text (JSON-able, so planning can keep
    it between runs; ``prompt_values`` of it equals ``prompt_values`` of the whole metadata)."""
    return {k: _as_text(metadata[k]) for k in METADATA_KEYS if k in metadata}


def template_fields(template: str) -> list[str]:
    """Names of the placeholders in ``template`` (raises ValueError on malformed braces)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"thinker.prompt_template {template!r}: {e} (write literal braces as {{{{ }}}})") from e
    names = []
    for _, field, _, _ in parsed:
        if field is None:
            continue
        base = field.split(".")[0].split("[")[0]
        if not base:
            raise ValueError(f"thinker.prompt_template {template!r}: positional placeholder '{{}}'; use a named field")
        names.append(base)
    return names


def validate_template(template: str) -> None:
    """Raise ValueError naming the unknown placeholders and the allowed ones."""
    unknown = sorted(set(template_fields(template)) - set(PROMPT_FIELDS))
    if unknown:
        allowed = ", ".join("{" + f + "}" for f in PROMPT_FIELDS)
        raise ValueError(f"thinker.prompt_template uses unknown field(s) {unknown}; allowed: {allowed}")


def _as_text(value: Any) -> str:
    """Metadata value -> clean text; empty string for anything that means 'missing'."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, float) and math.isnan(value):
        return ""
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays and scalars
        value = value.tolist()
    if isinstance(value, (list, tuple, set)):
        parts = [_as_text(v) for v in value]
        return ", ".join(p for p in parts if p)
    text = " ".join(str(value).split())
    if text.lower() in ("none", "nan", "null", "n/a"):
        return ""
    # Templates add their own full stop after a field.
    return text.rstrip(" .")


def prompt_values(metadata: Mapping[str, Any], clip_id: str | None = None) -> dict[str, str]:
    """Every template field for one clip, with defaults for what the metadata lacks."""
    meta = dict(metadata)
    if clip_id is not None:
        meta.setdefault("clip_id", clip_id)
    values: dict[str, str] = {}
    for name, keys in _SOURCES.items():
        text = ""
        for key in keys:
            text = _as_text(meta.get(key))
            if text:
                break
        values[name] = text
    if not values["task"] and values["clip_id"]:
        values["task"] = values["clip_id"].split("/")[0]
    # Folder-style task names ("sort_beads") read better to a language model as words.
    if values["task"] and " " not in values["task"]:
        values["task"] = values["task"].replace("_", " ")
    return {k: v or DEFAULTS[k] for k, v in values.items()}


def build_prompt(template: str, metadata: Mapping[str, Any], clip_id: str | None = None) -> str:
    """Fill ``template`` for one clip. Never fails on missing metadata."""
    validate_template(template)
    return template.format_map(prompt_values(metadata, clip_id))


def read_clip_metadata(annotation_path: str | Path) -> dict[str, Any]:
    """The HDF5 file attributes of one episode (task, description, llm_objects, ...).

    Reads attributes only, not the pose arrays, so planning a large manifest stays cheap.
    A missing or unreadable file raises ValueError naming it: a default prompt would silently
    give the clip other guidance than its own metadata (the runner records it as failed).
    """
    try:
        with h5py.File(annotation_path, "r") as f:
            return {k: v for k, v in f.attrs.items()}
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"unreadable HDF5 {annotation_path} at prompt planning: {type(e).__name__}: {e}") from e

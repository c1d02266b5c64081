"""Naming the file when a local model folder is damaged.

transformers reports a torn ``config.json`` (or processor, tokenizer or generation config) as a
bare ``JSONDecodeError`` ("Unterminated string starting at: line 1 column 28") that names no
file. Parsing every JSON file of the folder up front would cost a real tokenizer.json's parse
on every engine start, so the folder is only searched once loading has failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def damaged_json(model: str | Path) -> str | None:
    """``"<file>: <error>"`` for the first JSON file of a local model folder that does not
    parse; None when every one parses or ``model`` is not a local folder (a hub id)."""
    folder = Path(model)
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.json")):
        try:
            json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError) as e:
            return f"{path}: not valid JSON ({e})"
    return None


@contextmanager
def naming_damaged_files(model: str | Path) -> Iterator[None]:
    """Re-raise a load failure of ``model`` as one that names the damaged file, when one is."""
    try:
        yield
    except (ValueError, OSError) as e:
        bad = damaged_json(model)
        if bad is None:
            raise
        raise ValueError(f"{bad}: the model folder is damaged; copy or download {model} again") from e

"""A damaged local model folder is named by the file at fault (transformers says only
"Unterminated string starting at ..."); a whole folder is untouched and loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from thinkjepa.extract.model_files import damaged_json, naming_damaged_files
from thinkjepa.extract.thinker_io import open_thinker


@pytest.mark.parametrize("name", ["config.json", "processor_config.json", "tokenizer_config.json", "generation_config.json"])
def test_a_torn_json_file_is_named_when_the_thinker_opens(tiny_qwen_dir, tiny_thinker_cfg, tmp_path, name):
    model = Path(shutil.copytree(tiny_qwen_dir, tmp_path / "model"))
    if not (model / name).exists():
        pytest.fail(f"the tiny checkpoint has no {name}; pick files it has: {sorted(p.name for p in model.glob('*.json'))}")
    text = (model / name).read_text()
    (model / name).write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=rf"{model / name}: not valid JSON .*the model folder is damaged"):
        open_thinker(tiny_thinker_cfg.model_copy(update={"model": str(model)}))


def test_a_whole_folder_loads_and_other_failures_pass_through(tiny_qwen_dir, tiny_thinker_cfg, tmp_path):
    assert damaged_json(tiny_qwen_dir) is None
    _, info, layers = open_thinker(tiny_thinker_cfg)
    assert info.num_hidden_layers >= max(layers)
    assert damaged_json("Qwen/Qwen3-VL-8B-Thinking") is None  # a hub id is no folder to search
    with pytest.raises(ValueError, match="^other$"), naming_damaged_files(tiny_qwen_dir):
        raise ValueError("other")  # nothing damaged there: the original error, unchanged

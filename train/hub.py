"""A trained model as the field shares it: ``save_pretrained(folder)`` writes ``model.safetensors``,
``config.json`` (what rebuilds the model) and a model card ``README.md`` (the training config, the
digest of the data it trained on and the eval table where known); ``from_pretrained(folder or hub
id)`` rebuilds it, in eval mode, without the training folder or the caches.

The resume checkpoint (``train.checkpoint``) stays what it is: it also carries optimizer, RNG and
data position. This is the release format, loaded the way transformers models and lerobot
policies are. The mixin is thin on purpose: it records the constructor's arguments when a model
is built and does the file work here, so the model code itself knows nothing of files.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
FORMAT = "thinkjepa-pretrained"
FORMAT_VERSION = 1
EXPORT_DIR = "pretrained"
"""Where a training run writes its export, inside the run folder."""


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for a module whose first constructor argument
    is a pydantic model config and whose other arguments are plain JSON values."""

    _init_args: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        sig = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args: Any, **kw: Any) -> None:
            init(self, *args, **kw)
            bound = sig.bind(self, *args, **kw)
            bound.apply_defaults()
            # plain attribute: nn.Module.__setattr__ keeps non-tensors as they are
            self._init_args = {k: v for k, v in bound.arguments.items() if k not in ("self", "pretrained")}

        cls.__init__ = recording_init  # type: ignore[method-assign]

    def hub_config(self) -> dict[str, Any]:
        """What ``config.json`` holds: the model config and the other constructor arguments."""
        args = dict(self._init_args)
        first = next(iter(args))
        cfg = args.pop(first)
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "class": type(self).__name__,
                "config_arg": first, "model_cfg": cfg.model_dump(mode="json"), "model_args": args}

    def save_pretrained(self, folder: str | Path, card: Mapping[str, Any] | None = None) -> Path:
        """Write weights, config and model card into ``folder`` (created); returns it.

        ``card``: what the model card states where known: ``variant``, ``seed``,
        ``training_config`` (the resolved pipeline config, a dict), ``data_digest`` (dict of
        digests of the data it trained on), ``eval_table`` (Markdown), ``best_val_ade``, ``step``."""
        from safetensors.torch import save_model

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        module: torch.nn.Module = self  # type: ignore[assignment]
        card = dict(card or {})
        facts = {k: card[k] for k in ("variant", "seed", "step", "best_val_ade") if k in card}
        conf = {**self.hub_config(), **facts, "fingerprint": card.get("data_digest", {}).get("run_fingerprint")}
        save_model(module, str(folder / WEIGHTS), metadata={"format": FORMAT})
        (folder / CONFIG).write_text(json.dumps(conf, indent=1))
        (folder / CARD).write_text(model_card(conf, card))
        return folder

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, map_location: str | torch.device = "cpu", revision: str | None = None):
        """The model saved in a folder (or a Hugging Face Hub repo id), in eval mode."""
        from safetensors.torch import load_model

        folder = resolve(path_or_id, revision)
        conf = read_config(folder)
        if conf.get("class") != cls.__name__:
            raise ValueError(f"{folder / CONFIG}: holds a {conf.get('class')!r}, not a {cls.__name__}")
        init = inspect.signature(cls.__init__)
        cfg_type = init.parameters[conf["config_arg"]].annotation
        if isinstance(cfg_type, str):  # postponed annotations: the config class by name
            cfg_type = inspect.getmodule(cls).__dict__[cfg_type]  # type: ignore[union-attr]
        extra = {"pretrained": False} if "pretrained" in init.parameters else {}
        model = cls(cfg_type.model_validate(conf["model_cfg"]), **conf["model_args"], **extra)  # type: ignore[call-arg]
        missing, unexpected = load_model(model, str(folder / WEIGHTS), strict=True, device=str(map_location))
        if missing or unexpected:  # strict=True raises first; kept for a clear message if that changes
            raise ValueError(f"{folder / WEIGHTS}: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return model.eval()


def resolve(path_or_id: str | Path, revision: str | None = None) -> Path:
    """A local folder as is; anything else is taken for a Hub repo id and downloaded."""
    p = Path(path_or_id)
    if p.is_dir():
        return p
    if p.exists() or str(path_or_id).startswith((".", "/")) or str(path_or_id).count("/") != 1:
        raise FileNotFoundError(f"{path_or_id}: not a saved model folder (expected {CONFIG} and {WEIGHTS} in it) nor a "
                                "Hub repo id of the form owner/name")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(path_or_id), revision=revision, allow_patterns=[WEIGHTS, CONFIG, CARD]))


def read_config(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / CONFIG
    if not path.is_file() or not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(f"{folder}: not a saved model (needs {CONFIG} and {WEIGHTS}; "
                                f"training runs write one to <run>/{EXPORT_DIR})")
    conf = json.loads(path.read_text())
    if conf.get("format") != FORMAT or conf.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format {conf.get('format')!r} v{conf.get('format_version')!r}, "
                         f"expected {FORMAT!r} v{FORMAT_VERSION}")
    return conf


def model_card(conf: Mapping[str, Any], card: Mapping[str, Any]) -> str:
    """The ``README.md`` of a saved model: Hub front matter, what it is, how to load it, and
    the training config, data digest and eval table where known."""
    import yaml

    variant = card.get("variant", conf["model_cfg"].get("variant", "?"))
    lines = ["---", "library_name: thinkjepa", "tags: [thinkjepa, v-jepa, hand-forecasting, egodex]", "---", "",
             f"# ThinkJEPA `{variant}`" + (f", training seed {card['seed']}" if "seed" in card else ""), "",
             "A V-JEPA2-style predictor with thinker guidance forecasting 3D hand joints (EgoDex). Load it with:", "",
             "```python", "from thinkjepa.train.model import ThinkJEPA", "model = ThinkJEPA.from_pretrained(\"PATH_OR_HUB_ID\")",
             "```", "", "Evaluate it on a prepared workdir with `tj-eval --model PATH_OR_HUB_ID`.", ""]
    facts = {k: card[k] for k in ("step", "best_val_ade") if card.get(k) is not None}
    if facts:
        lines += ["## Training", "", *[f"- {k}: {v}" for k, v in facts.items()], ""]
    if card.get("data_digest"):
        lines += ["## Data digest", "", "What the run trained on (`train.run_inputs`):", "",
                  *[f"- `{k}`: `{v}`" for k, v in card["data_digest"].items()], ""]
    lines += ["## Evaluation", "", card.get("eval_table") or ("Not evaluated when this model was saved "
                                                             "(`tj-eval` on the training runs writes the eval table here)."), ""]
    if card.get("training_config"):
        lines += ["## Training config", "", "```yaml", yaml.safe_dump(card["training_config"], sort_keys=False).rstrip(), "```", ""]
    lines += ["## Model config", "", "```json", json.dumps({"model_cfg": conf["model_cfg"], "model_args": conf["model_args"]},
                                                          indent=1), "```", ""]
    return "\n".join(lines)


__all__ = ["CARD", "CONFIG", "EXPORT_DIR", "WEIGHTS", "PretrainedMixin", "model_card", "read_config", "resolve"]

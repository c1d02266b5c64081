"""``tj demo``: the whole pipeline on the embedded default with tiny local checkpoints.

Nothing is downloaded: a tiny random Qwen3-VL Thinking and a tiny V-JEPA2 are built with
``save_pretrained`` under ``<workdir>/models`` and loaded through the same code path as hub
ids. Without ``--data-root`` a synthetic EgoDex-layout dataset is written first.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from thinkjepa.app import pipeline
from thinkjepa.config import PipelineConfig, load_config

REAL_DATA_SETS = ("sampling.future_frames=8", "sampling.windows_per_clip=1", "sampling.horizon_steps=1",
                  "train.rollout_steps=1")
"""What ``tj demo --data-root`` changes in the synthetic demo's sampling: real EgoDex episodes
can be as short as 20 frames (the fixtures), too short for rollout v3's three windows with room
for four 4-frame rollout steps; one window of 8 past + 8 future frames fits them. Options the
user passes come after, so they still win."""


def demo_defaults() -> dict[str, Any]:
    return yaml.safe_load(files("thinkjepa.defaults").joinpath("demo.yaml").read_text())


def demo_config(workdir: Path, data_root: Path, qwen_dir: Path, vjepa_dir: Path, overrides: list[str],
                base: dict[str, Any] | None = None) -> PipelineConfig:
    """The demo's config: ``base`` (default: the embedded demo defaults) + the model and data
    paths + ``overrides``."""
    fixed = [
        f"workdir={workdir}",
        f"data.root={data_root}",
        f"thinker.model={qwen_dir}",
        f"encoder.model={vjepa_dir}",
    ]
    return load_config(None, fixed + list(overrides), base=base or demo_defaults(), use_default_file=False)


def prepare_models(workdir: Path, cfg_preview: PipelineConfig) -> tuple[Path, Path]:
    """Build (once) the tiny thinker and encoder checkpoints the demo runs."""
    import json

    from thinkjepa.tiny.qwen3vl import build_tiny_qwen3vl_thinking, engine_dtype
    from thinkjepa.tiny.vjepa2 import build_tiny_vjepa2

    models = workdir / "models"
    qwen_dir = models / "tiny-qwen3vl-thinking"
    vjepa_dir = models / "tiny-vjepa2"
    dtype = engine_dtype(cfg_preview.thinker.compute_dtype)
    qwen_cfg = qwen_dir / "config.json"
    if not qwen_cfg.exists() or json.loads(qwen_cfg.read_text()).get("dtype") != dtype:
        build_tiny_qwen3vl_thinking(qwen_dir, seed=0, dtype=dtype)
    if not (vjepa_dir / "config.json").exists():
        build_tiny_vjepa2(
            vjepa_dir,
            frames_per_clip=max(cfg_preview.sampling.past_frames, cfg_preview.sampling.future_frames),
            crop_size=cfg_preview.encoder.frame_size,
            seed=0,
        )
    return qwen_dir, vjepa_dir


def synthesize_demo_data(root: Path, cfg: PipelineConfig) -> Path:
    """Write the demo's synthetic dataset once (a ``.complete`` marker carries its settings,
    so changed settings write it anew)."""
    import json
    import shutil

    d = cfg.demo
    stamp = json.dumps(d.model_dump(mode="json") | {
        "past": cfg.sampling.past_frames, "future": cfg.sampling.future_frames,
        # the layout of v3 data follows the windows (not the thinker's frames)
        **({"sampling": cfg.sampling.model_dump(mode="json", exclude={"thinker_stop", "thinker_frames", "thinker_span"})}
           if d.generator == "rollout_v3" else {})}, sort_keys=True)
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == stamp:
        return root
    if root.exists():
        shutil.rmtree(root)
    if d.generator == "v1":
        from thinkjepa.data.synth import synthesize_dataset

        synthesize_dataset(root, episodes=d.episodes, seed=d.seed)
    elif d.generator == "rollout_v3":
        from thinkjepa.data.synth_v3 import synthesize_rollout_v3

        synthesize_rollout_v3(
            root, scenes=d.scenes, episodes_per_scene=d.episodes_per_scene, mode=d.mode, seed=d.seed,  # type: ignore[arg-type]
            n_frames=d.n_frames, sampling=cfg.sampling, progress=True,
        )
    else:
        from thinkjepa.data.synth_v2 import synthesize_guidance_v2

        if cfg.sampling.mode != "stride" or cfg.sampling.stride != 1 or cfg.sampling.windows_per_clip != 1:
            raise ValueError("the guidance_v2 demo data is laid out for sampling.mode=stride, stride 1, one window per clip")
        synthesize_guidance_v2(
            root, scenes=d.scenes, episodes_per_scene=d.episodes_per_scene, mode=d.mode, seed=d.seed,
            n_frames=d.n_frames, past_frames=cfg.sampling.past_frames, future_frames=cfg.sampling.future_frames,
            progress=True,
        )
    marker.write_text(stamp)
    return root


def run_demo(
    data_root: Path | None = None,
    workdir: Path = Path("runs/demo"),
    overrides: list[str] | None = None,
    on_event: Callable[[str, str, dict[str, Any]], None] | None = None,
) -> Path:
    """Run every stale stage of the demo pipeline; returns the evaluation report path."""
    workdir = Path(workdir).resolve()
    overrides = [*(REAL_DATA_SETS if data_root is not None else ()), *(overrides or [])]
    preview = load_config(None, overrides, base=demo_defaults(), use_default_file=False)
    qwen_dir, vjepa_dir = prepare_models(workdir, preview)
    if data_root is None:
        data_root = workdir / "data"
        synthesize_demo_data(data_root, preview)
    elif not Path(data_root).is_dir():
        raise FileNotFoundError(f"--data-root {data_root} is not a folder")
    cfg = demo_config(workdir, Path(data_root).resolve(), qwen_dir, vjepa_dir, overrides)
    pipeline.run(cfg, on_event=on_event)
    return cfg.path(cfg.eval.out) / "report.md"

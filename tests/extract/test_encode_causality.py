"""End-to-end causality: nothing at or after the forecast time t reaches the forecast.

Two copies of one episode differ only in frames >= t: video pixels (so the thinker's and the
encoder's future), camera poses, joints and confidences. Both go through the real stages:
manifest, V-JEPA2 encode (tiny random checkpoint), thinker extraction through the
transformers backend (tiny random Qwen3-VL Thinking), the training dataset, and the forward
of ThinkJEPA models moved off their init (with the gates at zero guidance could not
matter). The forecasts must be identical. A third copy that changes one thinker-only frame
before t shows the comparison is sensitive: its JEPA latents are identical, its guidance and
forecast are not.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from video_files import write_video

from thinkjepa.cache_schema import CacheReader
from thinkjepa.data.egodex import decode_frames
from thinkjepa.data.manifest import build_manifest, read_manifest
from thinkjepa.extract.backend_hf import TransformersThinker
from thinkjepa.extract.encode import JepaEncoder, run_encode
from thinkjepa.extract.runner import run_shard
from thinkjepa.sampling import windows_for_clip
from thinkjepa.train.dataset import WindowDataset
from thinkjepa.train.model import ThinkJEPA

CLIP = "reach_pads_sway/0"


def _write_lossless(path: Path, frames: np.ndarray, fps: int = 30) -> None:
    # Lossless, no B-frames, no look-ahead: frames < t decode to the same pixels in every copy
    # (a lossy encoder with look-ahead would let later frames change earlier ones).
    write_video(path, frames, rate=fps, pix_fmt="yuv444p", options={"qp": "0", "bf": "0", "threads": "1"})


def _copy_episode(src_root: Path, dst_root: Path, frames: np.ndarray, edit_hdf5=None) -> Path:
    (dst_root / CLIP).parent.mkdir(parents=True, exist_ok=True)
    _write_lossless(dst_root / f"{CLIP}.mp4", frames)
    shutil.copy(src_root / f"{CLIP}.hdf5", dst_root / f"{CLIP}.hdf5")
    if edit_hdf5 is not None:
        with h5py.File(dst_root / f"{CLIP}.hdf5", "r+") as f:
            edit_hdf5(f)
    return dst_root


def _run_stages(root: Path, work: Path, make_cfg, vjepa: Path, qwen: Path, encoder, thinker):
    cfg = make_cfg(work, root, vjepa,
                   sampling={"windows_per_clip": 1, "thinker_frames": 4},
                   thinker={"model": str(qwen), "backend": "transformers", "layers": [0, 1, 2, 3],
                            "max_new_tokens": 4, "max_prefill_tokens": 512, "storage_dtype": "float32",
                            "compute_dtype": "float32"},
                   data={"split_fractions": [1.0, 0.0, 0.0]}, model={"pred_depth": 4})
    build_manifest(cfg.data.root, cfg.path(cfg.data.manifest), cfg.data, cfg.sampling)
    assert run_encode(cfg, encoder=encoder, progress=False).ok
    summary = run_shard(cfg, backend=thinker, progress=False)
    assert summary.ok, summary.failed
    return cfg


@pytest.fixture(scope="module")
def copies(tiny_data, tiny_vjepa2, make_tiny_config, tmp_path_factory):
    from thinkjepa.tiny.qwen3vl import build_tiny_qwen3vl_thinking

    tmp = tmp_path_factory.mktemp("causality")
    qwen = build_tiny_qwen3vl_thinking(tmp / "qwen", seed=0)
    n = _n_frames(tiny_data)
    probe = make_tiny_config(tmp / "probe", tiny_data, tiny_vjepa2, sampling={"windows_per_clip": 1, "thinker_frames": 4})
    (window,) = windows_for_clip(CLIP, n, probe.sampling)
    t = window.t
    thinker_only = min(set(window.thinker) - set(window.past))
    frames = decode_frames(tiny_data / f"{CLIP}.mp4", list(range(n)))
    rng = np.random.default_rng(1)

    future_frames = frames.copy()
    future_frames[t:] = rng.integers(0, 256, future_frames[t:].shape, dtype=np.uint8)

    def perturb_future(f: h5py.File) -> None:
        for name in f["transforms"]:
            arr = f["transforms"][name][...]
            arr[t:, :3, 3] += rng.normal(0, 0.3, size=(n - t, 3)).astype(arr.dtype)
            if name == "camera":
                q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
                arr[t:, :3, :3] = q @ arr[t:, :3, :3]
            f["transforms"][name][...] = arr
        for name in f["confidences"]:
            f["confidences"][name][t:] = rng.uniform(0, 1, n - t).astype(np.float32)

    control_frames = frames.copy()
    control_frames[thinker_only] = 255 - control_frames[thinker_only]

    encoder = JepaEncoder(probe.encoder, device="cpu")
    thinker = TransformersThinker(probe.thinker.model_copy(update={
        "model": str(qwen), "backend": "transformers", "layers": [0, 1, 2, 3], "max_new_tokens": 4,
        "max_prefill_tokens": 512, "storage_dtype": "float32", "compute_dtype": "float32"}), device="cpu")
    out = {}
    try:
        for name, frs, edit in (("base", frames, None), ("future", future_frames, perturb_future),
                                ("control", control_frames, None)):
            root = _copy_episode(tiny_data, tmp / name / "data", frs, edit)
            out[name] = _run_stages(root, tmp / name / "work", make_tiny_config, tiny_vjepa2, qwen, encoder, thinker)
    finally:
        thinker.close()
    return out, window, n


def _n_frames(root: Path) -> int:
    with h5py.File(root / f"{CLIP}.hdf5", "r") as f:
        return int(f["transforms"]["camera"].shape[0])


def _batch(cfg, mode: str) -> dict[str, torch.Tensor]:
    ds = WindowDataset(cfg, read_manifest(cfg.path(cfg.data.manifest))["split"][0].as_py(), guidance=mode)
    assert len(ds) == 1
    return {k: v[None] for k, v in ds[0].items()}


def _as_if_trained(model: ThinkJEPA) -> ThinkJEPA:
    """Move every weight off its init: zero-initialised gates and output layers would hide
    any dependence on the guidance (or on the latents) at initialisation."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for p in model.injection.parameters():
            p.normal_(0, 0.5)
    return model.eval()


@pytest.mark.slow
def test_inputs_after_t_change_nothing_the_model_sees(copies) -> None:
    out, window, n = copies
    base, fut = out["base"], out["future"]
    # the copies really differ after t (targets use the recorded future joints) ...
    b_base, b_fut = _batch(base, "tokens"), _batch(fut, "tokens")
    assert not torch.equal(b_base["target_joints"], b_fut["target_joints"])
    assert not torch.equal(b_base["future_latents"], b_fut["future_latents"])
    # ... but every model input is bit-identical
    for k in ("past_latents", "cam_pose", "past_joints_cam", "guid_prefill", "guid_prefill_mask",
              "guid_generated", "guid_generated_mask"):
        assert torch.equal(b_base[k], b_fut[k]), k
    key = window.window_id
    vb, vf = CacheReader(base.url(base.thinker.cache)), CacheReader(fut.url(fut.thinker.cache))
    assert vb.get(key).text == vf.get(key).text
    for s in ("prefill", "generated"):
        np.testing.assert_array_equal(vb.read_means(key)[s], vf.read_means(key)[s])


def _model_and_batches(copies, injection: str, mode: str):
    """A thinkjepa model off its init with the given injection, and each copy's batch."""
    out, _, _ = copies
    cfg = out["base"].for_variant("thinkjepa")
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"injection": injection})})
    batches = {name: _batch(c, mode) for name, c in out.items()}
    ds = WindowDataset(out["base"], read_manifest(out["base"].path(out["base"].data.manifest))["split"][0].as_py(),
                       guidance=mode)
    torch.manual_seed(0)
    model = _as_if_trained(ThinkJEPA(cfg.model, **ds.dims))
    return model, batches


@pytest.mark.parametrize("injection,mode", [("film", "means"), ("cross_attn", "tokens")])
def test_forecast_ignores_everything_from_t_on(copies, injection, mode) -> None:
    model, batches = _model_and_batches(copies, injection, mode)
    with torch.no_grad():
        fc = {name: model(b)["joints_world"] for name, b in batches.items()}
    assert torch.equal(fc["base"], fc["future"])
    # control: a thinker-only frame before t reaches the forecast through the guidance alone
    assert torch.equal(batches["base"]["past_latents"], batches["control"]["past_latents"])
    assert not torch.allclose(fc["base"], fc["control"], atol=1e-6)


@pytest.mark.parametrize("injection,mode", [("film", "means"), ("cross_attn", "tokens")])
def test_every_rollout_step_ignores_everything_from_t_on(copies, injection, mode) -> None:
    """Recursive rollouts (both context modes, 3 steps) read the same inputs as step one: the
    guidance of every step comes from frames before t, so all steps are bit-identical."""
    model, batches = _model_and_batches(copies, injection, mode)
    for rollout_mode in ("shifted", "predicted"):
        ro = {name: model.rollout(b, 3, rollout_mode) for name, b in batches.items()}
        for key in ("pred_latents", "joints_cam", "joints_world"):
            assert torch.equal(ro["base"][key], ro["future"][key]), (rollout_mode, key)
        # sensitive: the thinker-only frame before t changes every step
        steps = ro["base"]["joints_world"].shape[1] // 3
        for k in range(3):
            sl = slice(k * steps, (k + 1) * steps)
            assert not torch.allclose(ro["base"]["joints_world"][:, sl], ro["control"]["joints_world"][:, sl], atol=1e-6)

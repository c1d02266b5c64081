"""The thinker backends: layer convention, and vLLM vs transformers parity on the tiny model.

Parity tolerance (fp32 compute on CPU): for every stored layer and both streams,
max |vLLM - transformers| <= STATE_RTOL * max |transformers| of that layer and stream.
Measured on these clips: about 1e-6 relative (4e-7 absolute on values up to 0.45). The
convention mismatches this test guards against are five orders of magnitude larger:
transformers' ``output_hidden_states`` without the deepstack features differs by ~0.6 of
the value scale at layers 0-2, and after the final norm by ~8x at the last layer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from thinkjepa.cache_schema.schema import TOKEN_TEXT, TOKEN_VISION
from thinkjepa.extract.layers import LAYER_CONVENTION, hf_capture_points, validate_layers, vllm_aux_layer_ids
from thinkjepa.extract.thinker_io import (
    ThinkerOutput,
    ThinkerRequest,
    build_chat_prompt,
    hf_video_metadata,
)

STATE_RTOL = 1e-4


def random_requests(seed: int, n: int = 3, frames: int = 8, size: int = 64) -> list[ThinkerRequest]:
    """Random 8-frame clips with different frame indices, fps and prompts."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        idx = sorted(rng.choice(300, frames, replace=False).tolist())
        out.append(
            ThinkerRequest(
                key=f"task_{k}/episode_{seed}@{idx[-1] + 1}",
                frames=rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8),
                frame_indices=idx,
                fps=[30.0, 15.0, 29.97][k % 3],
                user_text=f"Describe this video. Task: sort beads {k}. Scene: a table.",
            )
        )
    return out


def _ok(outs: list) -> list[ThinkerOutput]:
    for o in outs:
        if isinstance(o, Exception):
            raise o
    return outs


@pytest.fixture(scope="module")
def parity_runs(vllm_thinker, hf_thinker):
    reqs = random_requests(seed=1)
    # All clips go to the engine in one call (the production batching).
    return reqs, _ok(vllm_thinker.extract(reqs)), _ok(hf_thinker.extract(reqs))


def test_layer_mapping_is_validated_and_fixed():
    assert vllm_aux_layer_ids([0, 4, 8, 12, 16, 20, 24, 27], 28) == [1, 5, 9, 13, 17, 21, 25, 28]
    points = hf_capture_points([0, 26, 27], 28)
    assert [(p.module, p.index) for p in points] == [("layer", 1), ("layer", 27), ("norm", None)]
    with pytest.raises(ValueError, match="out of range"):
        validate_layers([0, 28], 28)
    with pytest.raises(ValueError, match="out of range"):
        validate_layers([-1, 3], 28)
    with pytest.raises(ValueError, match="strictly increasing"):
        validate_layers([4, 0], 28)
    with pytest.raises(ValueError, match="strictly increasing"):
        validate_layers([4, 4], 28)


def test_backends_describe_the_same_store(vllm_thinker, hf_thinker, tiny_thinker_cfg):
    for b in (vllm_thinker, hf_thinker):
        assert b.layers == tiny_thinker_cfg.layers == [0, 1, 2, 3]
        assert b.layer_convention == LAYER_CONVENTION
        assert b.hidden_size == 128


def test_same_prompt_tokens_and_greedy_generation(parity_runs, tiny_thinker_cfg):
    reqs, v_out, h_out = parity_runs
    for req, v, h in zip(reqs, v_out, h_out):
        assert v.key == h.key == req.key
        assert v.prompt == h.prompt
        assert v.prompt.endswith("<|im_start|>assistant\n<think>\n")
        np.testing.assert_array_equal(v.prefill_ids, h.prefill_ids)
        np.testing.assert_array_equal(v.all_generated_ids, h.all_generated_ids)
        np.testing.assert_array_equal(v.generated_ids, h.generated_ids)
        np.testing.assert_array_equal(v.prefill_kind, h.prefill_kind)
        np.testing.assert_array_equal(v.frame_index, h.frame_index)
        assert v.text == h.text
        # The last sampled token is never fed back, so it has no state.
        assert 1 <= len(v.all_generated_ids) <= tiny_thinker_cfg.max_new_tokens
        np.testing.assert_array_equal(v.generated_ids, v.all_generated_ids[:-1])
        # 8 frames of 64 px: 4 temporal patches of 2x2 merged tokens, each patch's tokens
        # tagged with the first source frame of the patch.
        vision = v.prefill_kind == TOKEN_VISION
        assert vision.sum() == 16
        assert set(np.unique(v.prefill_kind)) == {TOKEN_TEXT, TOKEN_VISION}
        np.testing.assert_array_equal(np.unique(v.frame_index[vision]), req.frame_indices[::2])
        assert (v.frame_index[~vision] == -1).all()
    # Clips differ, so their generations are not a constant the test could pass by accident.
    assert len({tuple(o.all_generated_ids) for o in v_out}) == len(v_out)


def test_hidden_states_agree_for_every_layer_and_stream(parity_runs, tiny_thinker_cfg):
    reqs, v_out, h_out = parity_runs
    layers = tiny_thinker_cfg.layers
    worst = 0.0
    for v, h in zip(v_out, h_out):
        for stream in ("prefill", "generated"):
            a, b = getattr(v, stream), getattr(h, stream)
            assert a.dtype == b.dtype == np.float32
            assert a.shape == b.shape
            assert a.shape[0] == len(layers) and a.shape[2] == 128
            for li, layer in enumerate(layers):
                scale = float(np.abs(b[li]).max())
                diff = float(np.abs(a[li] - b[li]).max())
                assert scale > 0
                worst = max(worst, diff / scale)
                assert diff <= STATE_RTOL * scale, f"{v.key} {stream} layer {layer}: max diff {diff:.3g} at scale {scale:.3g}"
    # The states are informative: another clip's states are far outside the tolerance.
    other = np.abs(v_out[0].prefill[:, :80] - v_out[1].prefill[:, :80]).max()
    assert other > 1e3 * STATE_RTOL * np.abs(v_out[0].prefill).max()
    print(f"worst relative difference vLLM vs transformers: {worst:.2e}")


def test_stored_layers_are_the_residual_stream_with_deepstack(hf_thinker, parity_runs):
    """Pins the convention against transformers' own outputs: stored layer i is decoder
    layer i's output plus the deepstack features added after it (vision tokens only), and
    the last stored layer is the input of the final norm."""
    reqs, _, h_out = parity_runs
    req, out = reqs[0], h_out[0]
    model, processor = hf_thinker.model, hf_thinker.processor
    inputs = processor(
        text=[build_chat_prompt(processor, req.user_text)],
        videos=[req.frames],
        video_metadata=[hf_video_metadata(req.frame_indices, req.fps)],
        do_sample_frames=False,
        return_tensors="pt",
    )
    with torch.inference_mode():
        ref = model(**inputs, output_hidden_states=True)
        deepstack = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).deepstack_features
        hidden = [x[0].numpy() for x in ref.hidden_states]
        normed_last = model.model.language_model.norm(torch.from_numpy(out.prefill[-1])).numpy()
    deepstack = [torch.cat(level).numpy() for level in deepstack]
    vision = out.prefill_kind == TOKEN_VISION
    n_layers = len(hidden) - 1
    for li, layer in enumerate(hf_thinker.layers):
        stored = out.prefill[li]
        if layer == n_layers - 1:
            # transformers' last hidden state is after the final norm.
            np.testing.assert_allclose(normed_last, hidden[-1], atol=1e-5)
            assert np.abs(stored - hidden[-1]).max() > 0.1
            continue
        expected = hidden[layer + 1].copy()
        if layer < len(deepstack):
            expected[vision] += deepstack[layer]
            assert np.abs(deepstack[layer]).max() > 0.05  # the correction is not negligible
        np.testing.assert_allclose(stored, expected, atol=1e-5, err_msg=f"layer {layer}")


@pytest.mark.parametrize("which", ["vllm", "transformers"])
def test_bad_requests_fail_alone(which, vllm_thinker, hf_thinker):
    backend = vllm_thinker if which == "vllm" else hf_thinker
    good = random_requests(seed=2, n=2)
    # 16 frames of 256 px = 8 patches x 64 tokens: over the 512-token context.
    too_long = random_requests(seed=3, n=1, frames=16, size=256)[0]
    too_long.key = "long/clip@99"
    broken = random_requests(seed=4, n=1)[0]
    broken.key = "broken/clip@7"
    broken.frames = broken.frames.astype(np.float32)
    outs = backend.extract([good[0], too_long, broken, good[1]])
    assert isinstance(outs[1], Exception) and "long/clip@99" in str(outs[1])
    assert "long" in str(outs[1]).lower() or "length" in str(outs[1]).lower()
    assert isinstance(outs[2], Exception) and "broken/clip@7" in str(outs[2]) and "uint8" in str(outs[2])
    for o, r in zip((outs[0], outs[3]), good):
        assert isinstance(o, ThinkerOutput) and o.key == r.key


def test_prefill_truncation_keeps_the_first_tokens(hf_thinker, parity_runs):
    reqs, _, h_out = parity_runs
    cfg = hf_thinker.cfg
    try:
        hf_thinker.cfg = cfg.model_copy(update={"max_prefill_tokens": 20})
        (cut,) = _ok(hf_thinker.extract([reqs[0]]))
    finally:
        hf_thinker.cfg = cfg
    full = h_out[0]
    assert cut.prefill.shape == (len(hf_thinker.layers), 20, 128)
    assert cut.prompt_tokens == len(full.prefill_ids)
    np.testing.assert_array_equal(cut.prefill_ids, full.prefill_ids[:20])
    np.testing.assert_allclose(cut.prefill, full.prefill[:, :20], atol=1e-6)
    np.testing.assert_array_equal(cut.generated_ids, full.generated_ids)

"""The thinker backends: layer convention, and vLLM vs transformers parity on the tiny model,
for both of vLLM's capture methods (forward hooks on the plain engine, and the
``extract_hidden_states`` speculative method), also under chunked prefill and preemption.

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


@pytest.fixture(scope="module")
def other_capture_thinker(vllm_thinker, tiny_thinker_cfg):
    """A second engine on the same checkpoint with the capture method the session's engine lacks."""
    from thinkjepa.extract.backends import make_backend

    other = "speculative" if vllm_thinker.capture == "hooks" else "hooks"
    backend = make_backend(tiny_thinker_cfg.model_copy(update={"capture": other}))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def capture_runs(parity_runs, vllm_thinker, other_capture_thinker):
    """The parity clips through each capture method: method -> outputs, and transformers' outputs."""
    reqs, v_out, h_out = parity_runs
    runs = {vllm_thinker.capture: v_out, other_capture_thinker.capture: _ok(other_capture_thinker.extract(reqs))}
    assert set(runs) == {"hooks", "speculative"}
    return reqs, runs, h_out


def assert_states_match(v_out: list[ThinkerOutput], h_out: list[ThinkerOutput], layers: list[int]) -> float:
    """Every stored layer and stream within STATE_RTOL of the reference; the worst relative difference."""
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
    return worst


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


@pytest.mark.parametrize("capture", ["hooks", "speculative"])
def test_same_prompt_tokens_and_greedy_generation(capture, capture_runs, tiny_thinker_cfg):
    reqs, runs, h_out = capture_runs
    v_out = runs[capture]
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


@pytest.mark.parametrize("capture", ["hooks", "speculative"])
def test_hidden_states_agree_for_every_layer_and_stream(capture, capture_runs, tiny_thinker_cfg):
    reqs, runs, h_out = capture_runs
    v_out = runs[capture]
    worst = assert_states_match(v_out, h_out, tiny_thinker_cfg.layers)
    # The states are informative: another clip's states are far outside the tolerance.
    other = np.abs(v_out[0].prefill[:, :80] - v_out[1].prefill[:, :80]).max()
    assert other > 1e3 * STATE_RTOL * np.abs(v_out[0].prefill).max()
    print(f"worst relative difference vLLM ({capture}) vs transformers: {worst:.2e}")


def test_the_two_capture_methods_store_the_same_states(capture_runs, tiny_thinker_cfg):
    """Hooks and the speculative method read the same residual stream at the same tokens."""
    _, runs, _ = capture_runs
    worst = assert_states_match(runs["hooks"], runs["speculative"], tiny_thinker_cfg.layers)
    print(f"worst relative difference hooks vs speculative: {worst:.2e}")


def test_hooks_follow_chunked_prefill_and_preemption(tiny_thinker_cfg, hf_thinker):
    """A KV cache of 6 usable 32-token blocks and 32 tokens per step: every ~90-token prompt is
    prefilled in chunks beside other requests' decodes, and requests are preempted and
    recomputed. The states still match transformers position by position."""
    from thinkjepa.extract.backend_vllm import VLLMThinker

    cfg = tiny_thinker_cfg.model_copy(update={"capture": "hooks", "max_new_tokens": 16})
    reqs = random_requests(seed=5, n=4)
    backend = VLLMThinker(cfg, engine_kwargs={"block_size": 32, "num_gpu_blocks_override": 7,
                                              "max_num_batched_tokens": 32, "max_model_len": 160})
    try:
        v_out = _ok(backend.extract(reqs))
        (stats,) = backend.llm.collective_rpc("thinkjepa_capture_stats")
    finally:
        backend.close()
    assert all(len(v.prefill_ids) > 32 for v in v_out)  # chunked by construction
    assert stats["recomputed_tokens"] > 0, stats  # the KV budget forced at least one preemption
    hf_cfg = hf_thinker.cfg
    try:
        hf_thinker.cfg = hf_cfg.model_copy(update={"max_new_tokens": 16})
        h_out = _ok(hf_thinker.extract(reqs))
    finally:
        hf_thinker.cfg = hf_cfg
    for v, h in zip(v_out, h_out):
        np.testing.assert_array_equal(v.all_generated_ids, h.all_generated_ids)
    assert_states_match(v_out, h_out, tiny_thinker_cfg.layers)


def test_the_same_batch_stores_the_same_states_bit_for_bit_in_bf16(tiny_thinker_cfg):
    """In bf16 the states depend on which requests share a forward pass. The backend holds the
    scheduler while a batch is added, so that depends on the batch alone, not on how fast the
    driver prepares each clip: a run, a run whose driver is slow (as with long videos to
    decode: the engine would start on the first clips alone) and a run in reverse order store
    the same bits. Without the hold the slow run generates other greedy tokens."""
    import time

    from thinkjepa.extract.backend_vllm import VLLMThinker

    backend = VLLMThinker(tiny_thinker_cfg.model_copy(update={"capture": "hooks", "compute_dtype": "bfloat16",
                                                               "max_new_tokens": 16}))
    reqs = random_requests(seed=3, n=12)
    enqueue = backend.llm.enqueue

    def slow_enqueue(*args, **kwargs):
        out = enqueue(*args, **kwargs)
        time.sleep(0.3)
        return out

    try:
        runs = [_ok(backend.extract(reqs))]
        backend.llm.enqueue = slow_enqueue
        runs.append(_ok(backend.extract(reqs)))
        backend.llm.enqueue = enqueue
        runs.append(_ok(backend.extract(reqs[::-1]))[::-1])
    finally:
        backend.close()
    first = runs[0]
    assert any(len(o.all_generated_ids) > 1 for o in first)
    for run in runs[1:]:
        for a, b in zip(first, run):
            assert a.key == b.key
            np.testing.assert_array_equal(a.all_generated_ids, b.all_generated_ids)
            np.testing.assert_array_equal(a.prefill, b.prefill)
            np.testing.assert_array_equal(a.generated, b.generated)


def test_engine_arguments_of_each_capture_method(tiny_thinker_cfg, monkeypatch):
    import torch

    from thinkjepa.extract.backend_vllm import capture_method, engine_args
    from thinkjepa.extract.hidden_capture import EXTENSION_CLASS

    hooks = engine_args(tiny_thinker_cfg, [0, 3], 4, capture_to="/tmp/x", method="hooks")
    assert hooks["enforce_eager"] is True and hooks["worker_extension_cls"] == EXTENSION_CLASS
    assert "speculative_config" not in hooks and "kv_transfer_config" not in hooks
    spec = engine_args(tiny_thinker_cfg, [0, 3], 4, capture_to="/tmp/x", method="speculative")
    assert spec["speculative_config"]["method"] == "extract_hidden_states"
    assert spec["speculative_config"]["draft_model_config"]["hf_config"]["eagle_aux_hidden_state_layer_ids"] == [1, 4]
    assert "worker_extension_cls" not in spec
    plain = engine_args(tiny_thinker_cfg, [0, 3], 4, capture_to=None)
    assert hooks["async_scheduling"] is False
    assert {k: v for k, v in hooks.items() if k != "worker_extension_cls"} == {
        **plain, "enforce_eager": True, "async_scheduling": False}
    with pytest.raises(ValueError, match="unknown capture method"):
        engine_args(tiny_thinker_cfg, [0, 3], 4, capture_to="/tmp/x", method="magic")
    for cuda, want in ((False, "hooks"), (True, "speculative")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        assert capture_method(tiny_thinker_cfg) == want
        for fixed in ("hooks", "speculative"):
            assert capture_method(tiny_thinker_cfg.model_copy(update={"capture": fixed})) == fixed


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

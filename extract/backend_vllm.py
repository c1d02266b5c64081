"""vLLM thinker backend: the production path.

One engine, many clips per ``extract`` call. The hidden states reach this process in one of
two ways (``thinker.capture``, resolved by :func:`capture_method`):

- ``speculative``: vLLM's ``extract_hidden_states`` speculative method. The target model
  hands the residual streams of the requested aux layers to a cache-only draft "model", and
  the project's connector (extract/connector.py) writes each finished request's states to a
  safetensors file. ``include_output_tokens`` makes the file hold the generated tokens'
  states too (all but the last sampled token, which was never fed back). Works with CUDA
  graphs; costs a verify token, the rejection sampler and a draft proposal per decode step.
- ``hooks``: the plain engine with forward pre-hooks on the decoder layers, installed in the
  worker by a worker extension (extract/hidden_capture.py); after a batch finishes, the
  worker writes each request's states to a file of the same layout. Eager engines only.

Either way the file is read here, checked against the request's token ids, and deleted.

vLLM runs its engine in child processes: scripts that build this backend need an
``if __name__ == "__main__":`` guard. On CPU, ``VLLM_CPU_KVCACHE_SPACE`` (GiB) must be set;
a small default is set here when it is missing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from concurrent.futures import InvalidStateError
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from thinkjepa.cache_schema.fastcopy import copy_serial
from thinkjepa.config import ThinkerConfig
from thinkjepa.extract.connector import CONNECTOR_MODULE, CONNECTOR_NAME
from thinkjepa.extract.hidden_capture import EXTENSION_CLASS
from thinkjepa.extract.layers import LAYER_CONVENTION, vllm_aux_layer_ids
from thinkjepa.extract.thinker_io import (
    ThinkerModelInfo,
    ThinkerOutput,
    ThinkerRequest,
    build_chat_prompt,
    check_request,
    finalize_output,
    name_error,
    open_thinker,
    video_metadata,
)

DEFAULT_CPU_KVCACHE_GIB = "1"


def capture_method(cfg: ThinkerConfig) -> str:
    """``hooks`` or ``speculative``: ``thinker.capture`` with ``auto`` resolved (hooks where the
    engine runs eagerly anyway, i.e. without a CUDA device)."""
    if cfg.capture != "auto":
        return cfg.capture
    import torch

    return "speculative" if torch.cuda.is_available() else "hooks"


def engine_args(cfg: ThinkerConfig, layers: list[int], num_hidden_layers: int, *, capture_to: str | None,
                method: str = "speculative") -> dict[str, Any]:
    """``vllm.LLM`` arguments of the thinker engine. ``capture_to``: the folder the captured
    states are written to; None gives the same engine without capture (the bench's baseline).
    ``method``: ``speculative`` or ``hooks`` (module docstring)."""
    import torch

    kwargs: dict[str, Any] = dict(
        model=cfg.model,
        revision=cfg.revision,
        dtype=cfg.compute_dtype,
        tensor_parallel_size=cfg.tensor_parallel_size,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        max_model_len=cfg.max_model_len,
        load_format=cfg.load_format,
        seed=0,
        # Every clip's prompt differs after a few template tokens; caching buys nothing
        # and would only add a path where states are not computed by this request.
        enable_prefix_caching=False,
        limit_mm_per_prompt={"image": 0, "video": 1},
        # CUDA graphs / torch.compile pay off on GPUs; on CPU they only slow the start.
        enforce_eager=not torch.cuda.is_available(),
    )
    if capture_to is None:
        return kwargs
    if method == "hooks":
        # Hooks fire only when modules are called: no CUDA graphs, no torch.compile. The fed
        # token ids are read from the host-side batch, which async scheduling leaves stale
        # (it feeds sampled tokens on the device).
        kwargs["enforce_eager"] = True
        kwargs["async_scheduling"] = False
        kwargs["worker_extension_cls"] = EXTENSION_CLASS
        return kwargs
    if method != "speculative":
        raise ValueError(f"unknown capture method {method!r} (hooks or speculative)")
    from vllm.config import KVTransferConfig

    kwargs["speculative_config"] = {
        "method": "extract_hidden_states",
        "num_speculative_tokens": 1,
        "draft_model_config": {
            "hf_config": {"eagle_aux_hidden_state_layer_ids": vllm_aux_layer_ids(layers, num_hidden_layers)}
        },
    }
    kwargs["kv_transfer_config"] = KVTransferConfig(
        kv_connector=CONNECTOR_NAME,
        kv_connector_module_path=CONNECTOR_MODULE,
        kv_role="kv_producer",
        kv_connector_extra_config={"shared_storage_path": capture_to},
    )
    return kwargs


def sampling_params(cfg: ThinkerConfig, info: ThinkerModelInfo, *, capture: bool):
    """Greedy decoding of ``max_new_tokens``; with ``capture`` the speculative path's connector
    also keeps the generated tokens' states (the hooks see every fed token anyway)."""
    from vllm import SamplingParams

    return SamplingParams(
        temperature=0.0,
        max_tokens=cfg.max_new_tokens,
        stop_token_ids=list(info.stop_token_ids),
        extra_args={"kv_transfer_params": {"include_output_tokens": True}} if capture else None,
    )


def engine_input_of(processor: Any, req: ThinkerRequest) -> tuple[str, dict[str, Any]]:
    """The prompt string and the engine input (prompt + video with its metadata) of a request."""
    prompt = build_chat_prompt(processor, req.user_text)
    return prompt, {"prompt": prompt, "multi_modal_data": {"video": (req.frames, video_metadata(req.frame_indices, req.fps))}}


def layer_major_f32(states) -> np.ndarray:
    """[N, L, H] tensor of any float dtype -> C-contiguous [L, N, H] float32 array in one pass:
    torch converts and transposes in the same copy (numpy took a conversion pass and a
    transposing pass, each slower than reading the file), on this thread (thinkjepa.cache_schema.fastcopy)."""
    import torch

    n, n_layers, hidden = states.shape
    out = torch.empty((n_layers, n, hidden), dtype=torch.float32)
    copy_serial(out, states.permute(1, 0, 2))
    return out.numpy()


class VLLMThinker:
    """Qwen3-VL through one vLLM engine with hidden-state extraction."""

    layer_convention = LAYER_CONVENTION

    def __init__(self, cfg: ThinkerConfig, *, engine_kwargs: dict[str, Any] | None = None) -> None:
        from vllm import LLM

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", DEFAULT_CPU_KVCACHE_GIB)
        self.cfg = cfg
        self.model_id = cfg.model
        self.processor, self.info, self.layers = open_thinker(cfg)
        self.hidden_size = self.info.hidden_size
        self._storage = tempfile.mkdtemp(prefix="thinkjepa-hidden-states-")
        self.capture = capture_method(cfg)

        kwargs = engine_args(cfg, self.layers, self.info.num_hidden_layers, capture_to=self._storage,
                             method=self.capture)
        kwargs.update(engine_kwargs or {})
        try:
            self.llm = LLM(**kwargs)
            if self.capture == "hooks":
                with self._engine_death_watch():
                    self.llm.collective_rpc("thinkjepa_start_capture", args=(list(self.layers),))
        except BaseException:
            self.close()
            raise

    def _sampling_params(self):
        # The hooks see every fed token without the connector's per-request flag.
        return sampling_params(self.cfg, self.info, capture=self.capture == "speculative")

    def extract(self, requests: list[ThinkerRequest]) -> list[ThinkerOutput | Exception]:
        # One watch for every blocking engine call of the batch (hold, wait, dump).
        with self._engine_death_watch():
            return self._extract(requests)

    def _extract(self, requests: list[ThinkerRequest]) -> list[ThinkerOutput | Exception]:
        results: list[ThinkerOutput | Exception | None] = [None] * len(requests)
        prompts: dict[int, str] = {}
        request_ids: dict[str, int] = {}
        # Requests are added one by one so that one the engine refuses (too long for the
        # context, bad video) fails alone; the rest then run in one batch. The scheduler is
        # held while they are added: otherwise the engine starts on the first requests while
        # later ones are still being prepared, so which requests share a forward pass depends
        # on timing, and in bf16 the states depend on that (up to 0.12 abs, and other greedy
        # tokens, on the tiny thinker): a rerun of the same batch would store other states.
        with self._scheduler_held():
            for i, req in enumerate(requests):
                try:
                    check_request(req)
                    prompt, engine_input = engine_input_of(self.processor, req)
                    (rid,) = self.llm.enqueue(engine_input, self._sampling_params(), use_tqdm=False)
                    prompts[i] = prompt
                    # enqueue returns vLLM's internal id ("<n>-<random>"); outputs carry "<n>".
                    request_ids[rid] = i
                    request_ids[rid.rsplit("-", 1)[0]] = i
                except Exception as e:
                    results[i] = name_error(req.key, e)
        if request_ids:
            try:
                outputs = self.llm.wait_for_completion(use_tqdm=False)
            except Exception as e:  # an engine failure fails every clip of the batch
                for i in set(request_ids.values()):
                    results[i] = name_error(requests[i].key, e)
                outputs = []
            files = self._dump_hooked_states(outputs, request_ids, requests, results)
            for out in outputs:
                i = request_ids.get(out.request_id)
                if i is None or results[i] is not None:
                    continue
                try:
                    results[i] = self._collect(i, requests[i], prompts[i], out, files)
                except Exception as e:
                    results[i] = name_error(requests[i].key, e)
            for path in files.values():  # requests the engine dropped: nothing claims them
                _remove(path)
        for i, r in enumerate(results):
            if r is None:
                results[i] = RuntimeError(f"{requests[i].key}: the engine returned no output for this request")
        return results  # type: ignore[return-value]

    @contextmanager
    def _scheduler_held(self):
        """Pause vLLM's scheduler (sleep level 0: requests are queued, not run) for the body,
        then resume it, so a batch starts with all its requests."""
        self.llm.sleep(level=0, mode="keep")
        try:
            yield
        finally:
            self.llm.wake_up(tags=["scheduling"])

    @contextmanager
    def _engine_death_watch(self):
        """Wake a blocking engine call if the engine core dies under it.

        An engine core that exits (a group Ctrl-C, the OOM killer) is seen by vLLM's monitor
        (``engine_dead``), but the caller is never woken: ``wait_for_completion`` waits on the
        outputs queue and a ``collective_rpc`` on its utility future, both forever. A watcher
        thread puts an error on the queue (vLLM raises it as EngineDeadError) and fails every
        pending utility future with EngineDeadError. No-op where vLLM's client has other
        internals."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        resources, outputs = getattr(core, "resources", None), getattr(core, "outputs_queue", None)
        pending = getattr(core, "utility_results", None)  # the RPCs' futures, by call id
        if resources is None or outputs is None:
            yield
            return
        done = threading.Event()

        def watch() -> None:
            from vllm.v1.engine.exceptions import EngineDeadError

            while not done.wait(0.5):
                if getattr(resources, "engine_dead", False):
                    outputs.put_nowait(RuntimeError("the vLLM engine core process exited"))
                    for future in list((pending or {}).values()):
                        try:
                            future.set_exception(EngineDeadError(suppress_context=True))
                        except InvalidStateError:  # its answer arrived first
                            pass
                    return

        threading.Thread(target=watch, daemon=True, name="thinkjepa-engine-death-watch").start()
        try:
            yield
        finally:
            done.set()

    def _dump_hooked_states(self, outputs, request_ids: dict[str, int], requests: list[ThinkerRequest],
                            results: list) -> dict[int, str]:
        """Hooks path: have the worker write the finished requests' states; request index -> file."""
        if self.capture != "hooks" or not outputs:
            return {}
        try:
            per_rank = self.llm.collective_rpc("thinkjepa_dump_hidden_states", args=(self._storage,))
        except Exception as e:  # no states for anyone in this batch
            for out in outputs:
                i = request_ids.get(out.request_id)
                if i is not None:
                    results[i] = name_error(requests[i].key, e)
            return {}
        files: dict[int, str] = {}
        for dumped in per_rank:
            for req_id, path in dumped.items():
                i = request_ids.get(req_id)
                if i is None:
                    _remove(path)
                else:
                    files[i] = path
        return files

    def _collect(self, index: int, req: ThinkerRequest, prompt: str, out, files: dict[int, str]) -> ThinkerOutput:
        if self.capture == "hooks":
            from safetensors.torch import load_file

            path, load, cleanup = files.pop(index, None), load_file, _remove
            missing = "the capture hooks recorded no hidden states for this request"
        else:
            # load_hidden_states waits on the connector's per-file lock until its writer is done
            from vllm.distributed.kv_transfer.kv_connector.v1.example_hidden_states_connector import (
                cleanup_hidden_states as cleanup,
            )
            from vllm.distributed.kv_transfer.kv_connector.v1.example_hidden_states_connector import (
                load_hidden_states as load,
            )

            path = (out.kv_transfer_params or {}).get("hidden_states_path")
            missing = "vLLM returned no hidden_states_path (is the connector configured?)"
        if path is None:
            raise RuntimeError(f"{req.key}: {missing}")
        try:
            data = load(path)
        finally:
            cleanup(path)
        states = data["hidden_states"]  # [num_tokens, num_layers, hidden], the engine's dtype
        token_ids = data["token_ids"].numpy()
        prompt_ids = np.asarray(out.prompt_token_ids, dtype=np.int64)
        all_gen = np.asarray(out.outputs[0].token_ids, dtype=np.int64)
        expected = np.concatenate([prompt_ids, all_gen[:-1]]) if len(all_gen) else prompt_ids
        if not np.array_equal(token_ids, expected):
            raise RuntimeError(
                f"{req.key}: hidden-state file holds {len(token_ids)} token ids that do not match the "
                f"{len(prompt_ids)} prompt + {max(len(all_gen) - 1, 0)} fed-back generated tokens"
            )
        if states.shape[1] != len(self.layers) or states.shape[2] != self.hidden_size:
            raise RuntimeError(f"{req.key}: hidden states of shape {tuple(states.shape)}, expected [*, {len(self.layers)}, {self.hidden_size}]")
        n_prompt = len(prompt_ids)
        return finalize_output(
            req,
            prompt=prompt,
            prefill=layer_major_f32(states[:n_prompt]),
            prefill_ids=prompt_ids,
            generated=layer_major_f32(states[n_prompt:]),
            all_generated_ids=all_gen,
            text=self.processor.tokenizer.decode(all_gen.tolist(), skip_special_tokens=True),
            max_prefill_tokens=self.cfg.max_prefill_tokens,
            info=self.info,
        )

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            self.llm = None
            shutdown = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
            if shutdown is not None and hasattr(shutdown, "shutdown"):
                shutdown.shutdown()
            del llm
        shutil.rmtree(self._storage, ignore_errors=True)


def _remove(path: str) -> None:
    Path(path).unlink(missing_ok=True)

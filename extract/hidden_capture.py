"""Hidden-state capture by forward hooks on the thinker's decoder layers: the eager path.

vLLM's ``extract_hidden_states`` speculative method (extract/connector.py) verifies one draft
token on every decode step and runs the rejection sampler and the draft proposal, which on
CPU costs the plain engine about two thirds of its decode-heavy throughput
(benchmarks/bench_capture.py). This path runs the plain engine instead and records the
stored layers with forward pre-hooks, REFERENCE §4's "worker extension through
``collective_rpc``" alternative. Hooks fire only when the model runs eagerly: CUDA graphs
replay kernels without calling modules, so the backend uses this path where the engine is
eager anyway (CPU) and the speculative one elsewhere (``thinker.capture``).

Where each stored layer is read (extract/layers.py): stored layer ``i`` is the residual
stream that decoder layer ``i + 1`` receives, ``hidden_states + residual`` as passed to it
(after layer ``i``'s deepstack addition), and for the last layer what the final norm
receives. That is exactly vLLM's aux id ``i + 1``.

Which tokens belong to which request is read from the model runner's persistent batch at the
end of each forward (the final norm's pre-hook): the requests in batch order, their
``query_start_loc`` slices of the flat token axis, the tokens each had computed before this
step (its start position) and the fed token ids. A request recomputed after preemption
overwrites its earlier positions. Only forwards inside ``execute_model`` are recorded (not
warm-up or profiling runs).

Loaded by vLLM in its worker process through ``worker_extension_cls``; the driver calls
``thinkjepa_start_capture`` once and ``thinkjepa_dump_hidden_states`` after each batch of
requests has finished (``collective_rpc``). The dump writes one safetensors file per request
(``hidden_states`` [N, L, H] in the engine's dtype, ``token_ids`` [N]: the same layout as the
speculative connector's files) and forgets the request.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import numpy as np
import torch

EXTENSION_CLASS = "thinkjepa.extract.hidden_capture.ThinkerHiddenStateCapture"


class _Capture:
    """The hooks on one model runner and the states they recorded, per request."""

    def __init__(self, runner: Any, layers: list[int]) -> None:
        for attr in ("input_batch", "query_start_loc", "input_ids"):
            if not hasattr(runner, attr):
                raise RuntimeError(
                    f"hook capture needs vLLM's v1 model runner (it has no {attr!r}); "
                    "set thinker.capture=speculative")
        decoder = _decoder_of(runner.get_model())
        n_layers = len(decoder.layers)
        bad = [i for i in layers if not 0 <= i < n_layers]
        if bad or not layers:
            raise ValueError(f"layers {layers} out of range for a thinker of {n_layers} decoder layers")
        self.runner = runner
        self.n_stored = len(layers)
        self.active = False
        self.step: list[torch.Tensor | None] = [None] * len(layers)
        self.chunks: dict[str, list[tuple[int, torch.Tensor, torch.Tensor]]] = defaultdict(list)
        self.files = 0
        self.recorded_end: dict[str, int] = {}
        self.stats = {"forwards": 0, "tokens": 0, "recomputed_tokens": 0}
        self.handles = []
        for slot, i in enumerate(layers):
            module = decoder.layers[i + 1] if i + 1 < n_layers else decoder.norm
            # decoder layer: (positions, hidden_states, residual); final norm: (hidden_states, residual)
            first = 1 if i + 1 < n_layers else 0
            self.handles.append(module.register_forward_pre_hook(self._recorder(slot, first), with_kwargs=True))
        # Registered last, so it runs after the norm's own capture hook: the forward is complete.
        self.handles.append(decoder.norm.register_forward_pre_hook(self._end_of_forward))
        original = runner.execute_model

        def execute_model(*args, **kwargs):
            self.active = True
            try:
                return original(*args, **kwargs)
            finally:
                self.active = False

        runner.execute_model = execute_model

    def _recorder(self, slot: int, first: int):
        names = ("hidden_states", "residual")

        def hook(module, args, kwargs):
            if not self.active:
                return None
            values = list(args[first:first + 2])
            for name in names[len(values):]:
                values.append(kwargs.get(name))
            hidden, residual = values
            # A new tensor: the layer's fused norm updates its inputs in place.
            self.step[slot] = hidden + residual if residual is not None else hidden.clone()
            return None

        return hook

    def _end_of_forward(self, module, args) -> None:
        step, self.step = self.step, [None] * self.n_stored
        batch = self.runner.input_batch
        num_reqs = int(batch.num_reqs)
        if not self.active or num_reqs == 0:
            return
        if any(t is None for t in step):
            raise RuntimeError("hook capture: a stored layer was not reached in this forward")
        cu = np.array(self.runner.query_start_loc.np[: num_reqs + 1], dtype=np.int64)
        total = int(cu[-1])
        # One copy of the step: [tokens, layers, hidden] on the host.
        stacked = torch.stack([t[:total] for t in step], dim=1).to("cpu")  # type: ignore[index]
        ids = self.runner.input_ids.cpu[:total].to(torch.int64).clone()
        starts = np.array(batch.num_computed_tokens_cpu[:num_reqs], dtype=np.int64)
        self.stats["forwards"] += 1
        self.stats["tokens"] += total
        for j, req_id in enumerate(batch.req_ids[:num_reqs]):
            a, b = int(cu[j]), int(cu[j + 1])
            if b > a:
                start = int(starts[j])
                end = self.recorded_end.get(req_id, 0)
                # positions computed again (a preempted request's recompute) replace the old ones
                self.stats["recomputed_tokens"] += max(0, min(end, start + b - a) - start)
                self.recorded_end[req_id] = max(end, start + b - a)
                self.chunks[req_id].append((start, stacked[a:b], ids[a:b]))

    def dump(self, folder: str) -> dict[str, str]:
        """Write every recorded request's states to ``folder``; request id -> file. Forgets them."""
        from safetensors.torch import save_file

        out: dict[str, str] = {}
        chunks, self.chunks = self.chunks, defaultdict(list)
        self.recorded_end.clear()
        for req_id, parts in chunks.items():
            length = max(s + len(t) for s, t, _ in parts)
            first = parts[0][1]
            states = torch.empty((length, *first.shape[1:]), dtype=first.dtype)
            # A position no forward recorded keeps id -1: the driver's token check names it.
            ids = torch.full((length,), -1, dtype=torch.int64)
            for s, t, i in parts:  # in arrival order: a recompute overwrites
                states[s:s + len(t)] = t
                ids[s:s + len(t)] = i
            self.files += 1
            path = os.path.join(folder, f"hooks-{os.getpid()}-{self.files:09d}.safetensors")
            save_file({"hidden_states": states, "token_ids": ids}, path)
            out[req_id] = path
        return out


def _decoder_of(model: Any) -> Any:
    """The module holding the decoder ``layers`` and the final ``norm`` of a (multimodal) model."""
    lm = model.get_language_model() if hasattr(model, "get_language_model") else model
    for candidate in (getattr(lm, "model", None), lm):
        if candidate is not None and hasattr(candidate, "layers") and hasattr(candidate, "norm"):
            return candidate
    raise RuntimeError(f"hook capture: no decoder layers and final norm found in {type(model).__name__}")


class ThinkerHiddenStateCapture:
    """vLLM worker extension: its methods become the worker's, callable through
    ``LLM.collective_rpc``. Names carry a prefix so they never collide with the worker's own."""

    def thinkjepa_start_capture(self, layers: list[int]) -> int:
        """Install the hooks for the stored ``layers``; returns how many were installed."""
        if getattr(self, "_thinkjepa_capture", None) is not None:
            raise RuntimeError("hook capture is already installed on this worker")
        capture = _Capture(self.model_runner, [int(x) for x in layers])  # type: ignore[attr-defined]
        self._thinkjepa_capture = capture
        return len(capture.handles) - 1

    def thinkjepa_capture_stats(self) -> dict[str, int]:
        """Forwards recorded, tokens recorded and tokens recorded again (recomputes) so far."""
        capture = getattr(self, "_thinkjepa_capture", None)
        return dict(capture.stats) if capture is not None else {}

    def thinkjepa_dump_hidden_states(self, folder: str) -> dict[str, str]:
        """Write the finished requests' states to ``folder`` (tensor-parallel rank 0 only:
        the residual stream is the same on every rank); request id -> file."""
        capture = getattr(self, "_thinkjepa_capture", None)
        if capture is None:
            raise RuntimeError("hook capture was never started on this worker")
        if getattr(self, "rank", 0) != 0:
            capture.chunks.clear()
            capture.recorded_end.clear()
            return {}
        return capture.dump(folder)

"""The project's hidden-states KV connector for vLLM, usable on CPU and GPU.

vLLM's ``ExampleHiddenStatesConnector`` (used with the ``extract_hidden_states`` speculative
method) reads each finished request's hidden states out of the cache-only "KV cache" and
writes them to ``<shared_storage_path>/<request>.safetensors``. Its write step stages the
copy in pinned host memory on a CUDA stream, which fails on a CPU-only build (docs/reference.md §4).
Here a CPU cache is copied directly and written by the same thread pool, under the same
per-file lock protocol; on CUDA the parent's asynchronous path runs unchanged.

Loaded by vLLM in its worker processes through
``KVTransferConfig(kv_connector="ThinkerHiddenStatesConnector",
kv_connector_module_path="thinkjepa.extract.connector")``.
"""

from __future__ import annotations

import fcntl
import os
from concurrent.futures import Future
from functools import partial

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.example_hidden_states_connector import (
    ExampleHiddenStatesConnector,
    PendingSave,
    extract_from_kv_cache,
)

CONNECTOR_NAME = "ThinkerHiddenStatesConnector"
CONNECTOR_MODULE = "thinkjepa.extract.connector"


class _HostCopyDone:
    """Completion object of a host-side copy: done as soon as it exists.

    Stands in for the parent's ``torch.cuda.Event`` (its writer thread calls
    ``synchronize()``, ``get_finished`` polls ``query()``)."""

    def synchronize(self) -> None:
        return None

    def query(self) -> bool:
        return True


class ThinkerHiddenStatesConnector(ExampleHiddenStatesConnector):
    """ExampleHiddenStatesConnector whose write step also works when the cache lives on the CPU."""

    def _submit_async_write(self, pending: PendingSave) -> None:
        if not self._is_tp_rank_zero:
            return
        assert self._kv_cache is not None
        if self._kv_cache.is_cuda:
            super()._submit_async_write(pending)
            return

        block_ids = torch.tensor(pending.block_ids, dtype=torch.long)
        offsets = torch.arange(self._block_size, dtype=torch.long)
        num_tokens = pending.token_ids.shape[0]
        # Only the request's own slots (not its last block's tail): the gather below is then
        # the one copy, exactly [num_tokens, layers, hidden]. It must be a real copy: the
        # blocks go back to the allocator once this request is reported done, and the next
        # engine step may overwrite them before the writer thread runs.
        slot_mapping = (offsets[None, :] + block_ids[:, None] * self._block_size).flatten()[:num_tokens]
        states = extract_from_kv_cache(self._kv_cache, slot_mapping, num_tokens)
        tensors = {"hidden_states": states, "token_ids": pending.token_ids}

        assert pending.req_id not in self._req_futures, "Found another KV transfer request with same req_id!"
        os.makedirs(os.path.dirname(pending.filename), exist_ok=True)
        lock_fd = self._lock_fds.pop(pending.req_id, None)
        if lock_fd is None and self.use_lock:
            lock_fd = os.open(pending.filename + ".lock", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)

        done = _HostCopyDone()
        future: Future = self._executor.submit(self._write_tensors, tensors, done, pending.filename, lock_fd)
        self._req_copy_events[pending.req_id] = done  # type: ignore[assignment]
        self._req_futures[pending.req_id] = future
        future.add_done_callback(partial(self._on_write_done, pending.req_id))

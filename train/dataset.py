"""Training batches streamed from the caches: one sample per forecast window of one split.

A sample is the per-window slice of the model batch contract (see ``docs`` / train/model.py):
frozen V-JEPA2 latents from the JEPA cache, thinker guidance from the VLM cache (per-layer
means, or token states padded to ``model.guidance_tokens`` with masks), and targets computed
from the episode's HDF5 (``train.targets``). The caches are read only through
``thinkjepa.cache_schema.CacheReader``; readers and per-episode arrays are opened lazily in
each DataLoader worker (never pickled across processes).

Data order is a pure function of ``(seed, epoch)`` (``EpochBatchSampler``), and the loader
has its own generator, so building an iterator never touches the global RNG: a resumed run
sees the same batches, and the same dropout masks, as an uninterrupted one.
"""

from __future__ import annotations

import math
import queue
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from thinkjepa.cache_schema import CacheReader
from thinkjepa.config import PipelineConfig
from thinkjepa.sampling import TooShortError, Window, rollout_frames, windows_for_clip
from thinkjepa.train.pooling import frame_groups, n_slots, pool_prefill
from thinkjepa.train.targets import window_targets

GuidanceMode = Literal["means", "tokens", "none"]
SPLITS = ("train", "val", "test")


def guidance_mode_for(cfg: PipelineConfig) -> GuidanceMode:
    """What the model of ``cfg`` reads from the VLM cache (the model decides; see
    ``thinkjepa.train.model.guidance_mode``): nothing, per-layer means, or tokens."""
    from thinkjepa.train.model import guidance_mode

    return guidance_mode(cfg.model)


@dataclass(frozen=True)
class WindowRef:
    window: Window
    video_path: str
    annotation_path: str

    @property
    def key(self) -> str:
        return self.window.window_id


def split_windows(cfg: PipelineConfig, split: str) -> list[WindowRef]:
    """Every window of the manifest clips in ``split``, ordered by clip id then ``t``."""
    from thinkjepa.data.manifest import read_manifest

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    path = cfg.path(cfg.data.manifest)
    if not path.exists():
        raise FileNotFoundError(f"clips manifest {path} not found: build it first with `tj data index`")
    table = read_manifest(path)
    rows = table.to_pylist() if hasattr(table, "to_pylist") else table.to_dict("records")
    out: list[WindowRef] = []
    for row in sorted((r for r in rows if r["split"] == split), key=lambda r: r["clip_id"]):
        try:
            windows = windows_for_clip(str(row["clip_id"]), int(row["n_frames"]), cfg.sampling)
        except TooShortError:
            continue  # the encode / extract stages record why; nothing to train on here
        out += [WindowRef(w, str(row["video_path"]), str(row["annotation_path"])) for w in windows]
    return out


def _nothing_to_serve(cfg: PipelineConfig, split: str, refs: list[WindowRef], jepa_url: str, vlm_url: str | None) -> str:
    """Why a split yields no sample, and the command that fixes it."""
    from thinkjepa.data.manifest import read_manifest

    if not refs:
        clips = read_manifest(cfg.path(cfg.data.manifest), split=split).num_rows
        if clips:
            return (f"split {split!r}: its {clips} clip(s) are all too short for the sampling settings; "
                    "shorten sampling.past_frames/future_frames or add longer episodes, then rerun `tj data index`")
        table = read_manifest(cfg.path(cfg.data.manifest))
        total, tasks = table.num_rows, len(set(table.column("task").to_pylist()))
        why = f"split {split!r} is empty: the manifest {cfg.path(cfg.data.manifest)} has {total} clip(s) of {tasks} task folder(s)"
        if cfg.data.split_by == "task":
            return (f"{why}, split by task folder; split it by episode instead: "
                    "`tj data index --set data.split_by=episode`")
        if total < 3:
            return f"{why}: every split needs one; add episodes to {cfg.data.root or 'the dataset'} and rerun `tj data index`"
        return (f"{why}; data.split_fractions {list(cfg.data.split_fractions)} give it no share: raise it and "
                "rerun `tj data index`")
    caches = jepa_url + (f", {vlm_url}" if vlm_url else "")
    return (f"split {split!r}: none of its {len(refs)} windows is in the caches ({caches}): they are pending or "
            "failed there; `tj-extract status` lists them, `tj encode` and `tj-extract run` (re)do them")


class WindowDataset(Dataset):
    """Samples of one split; ``window_ids`` lists what it serves, in index order.

    Windows missing from a cache (failed or not yet extracted/encoded) are left out and listed
    in ``missing``; at least one window must remain.
    """

    def __init__(
        self,
        cfg: PipelineConfig,
        split: str,
        guidance: GuidanceMode | None = None,
        windows: list[WindowRef] | None = None,
        memoize: bool = False,
        readers: tuple[CacheReader, CacheReader | None] | None = None,
        target_steps: int = 1,
    ) -> None:
        """``memoize``: keep every sample in memory after its first read (small datasets such
        as the demo's, read once per epoch for hundreds of epochs; off at EgoDex scale).
        ``readers``: the (JEPA, VLM) caches already open and checked against ``cfg``
        (``run_inputs.TrainInputs``); without them they are opened and checked here.
        ``target_steps``: ``target_joints`` / ``target_conf`` cover this many rollout steps
        (``train.rollout_steps``), step after step; 1: the window's own future."""
        if target_steps < 1:
            raise ValueError(f"target_steps must be >= 1, got {target_steps}")
        self.target_steps = target_steps
        self.split = split
        self.memoize = memoize
        self._memo: dict[int, dict[str, torch.Tensor]] = {}
        self.guidance: GuidanceMode = guidance or guidance_mode_for(cfg)
        if self.guidance not in ("means", "tokens", "none"):
            raise ValueError(f"unknown guidance mode {self.guidance!r}")
        self.jepa_url = cfg.url(cfg.encoder.cache)
        self.vlm_url = cfg.url(cfg.thinker.cache) if self.guidance != "none" else None
        self.max_tokens = cfg.model.guidance_tokens
        self.pooling = cfg.model.pooling if self.guidance == "means" else "all"
        self.pool_groups = cfg.model.pool_groups
        from thinkjepa.train.pyramid import streams_of

        self.streams = streams_of(cfg.model.streams) if self.guidance != "none" else ()
        refs = split_windows(cfg, split) if windows is None else list(windows)

        if readers is None:
            from thinkjepa.train.run_inputs import check_caches

            readers = (CacheReader(self.jepa_url), CacheReader(self.vlm_url) if self.vlm_url is not None else None)
            check_caches(cfg, *readers)
        jepa, vlm = readers[0], readers[1] if self.vlm_url is not None else None
        have = set(jepa.keys())
        if vlm is not None:
            have &= set(vlm.keys())
        self.refs = [r for r in refs if r.key in have]
        self.missing = [r.key for r in refs if r.key not in have]
        if not self.refs:
            raise ValueError(_nothing_to_serve(cfg, split, refs, self.jepa_url, self.vlm_url))
        if self.missing:
            warnings.warn(
                f"split {split!r}: {len(self.missing)} of {len(refs)} windows are missing from the caches "
                f"and are skipped (first: {self.missing[:3]})",
                stacklevel=2,
            )
        past, future = jepa.read_jepa(self.refs[0].key)
        self.dims: dict[str, int] = {
            "latent_dim": int(past.shape[-1]),
            "n_tubelets_past": int(past.shape[0]),
            "n_tubelets_future": int(future.shape[0]),
            "n_patches": int(past.shape[1]),
            "future_frames": len(self.refs[0].window.future),
            # jepa_only still gets a pyramid-shaped model; its size is irrelevant then
            "guidance_layers": len(vlm.meta.layers) if vlm is not None else 1,
            "guidance_hidden": int(vlm.meta.hidden_size) if vlm is not None else 1,
            "guidance_slots": 1,
        }
        self.n_groups = 0
        if vlm is not None and self.pooling == "frame_groups" and "prefill" in self.streams:
            self.n_groups = len(frame_groups(*vlm.read_token_info(self.refs[0].key)))
            self.dims["guidance_slots"] = n_slots(self.pooling, self.n_groups, self.pool_groups)
        self._jepa: CacheReader | None = jepa
        self._vlm: CacheReader | None = vlm
        self._episodes: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._pooled: dict[str, np.ndarray] = {}

    @property
    def window_ids(self) -> list[str]:
        return [r.key for r in self.refs]

    def __len__(self) -> int:
        return len(self.refs)

    def __getstate__(self) -> dict[str, Any]:
        # Zarr/fsspec handles do not survive a fork or pickle reliably; each worker reopens.
        state = dict(self.__dict__)
        state.update(_jepa=None, _vlm=None, _episodes={}, _pooled={}, _memo={})
        return state

    def _readers(self) -> tuple[CacheReader, CacheReader | None]:
        if self._jepa is None:
            self._jepa = CacheReader(self.jepa_url)
            self._vlm = CacheReader(self.vlm_url) if self.vlm_url is not None else None
        return self._jepa, self._vlm

    def _episode(self, ref: WindowRef) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        clip = ref.window.clip_id
        if clip not in self._episodes:
            self._episodes[clip] = _EPISODES.get(ref.video_path, ref.annotation_path, clip)
        return self._episodes[clip]

    def targets(self, index: int):
        """Training targets of window ``index`` (``train.targets.WindowTargets``), over
        ``target_steps`` rollout steps."""
        ref = self.refs[index]
        joints, conf, pose = self._episode(ref)
        w = ref.window
        if self.target_steps > 1:
            frames = tuple(f for block in rollout_frames(w, self.target_steps) for f in block)
            if frames[-1] >= joints.shape[0]:
                raise ValueError(
                    f"{w.window_id}: train.rollout_steps={self.target_steps} needs frames up to {frames[-1]}, the "
                    f"episode has {joints.shape[0]}; set sampling.horizon_steps >= train.rollout_steps and re-index")
            w = Window(w.clip_id, w.t, w.past, frames, w.thinker)
        return window_targets(joints, conf, pose, w)

    def _pooled_prefill(self, vlm: CacheReader, key: str) -> np.ndarray:
        """[L, K, H] vision or frame-group pooled prefill states; memoised (a few KB each),
        since it reads every prefill token of the window."""
        if key not in self._pooled:
            tokens, _ = vlm.read_tokens(key, "prefill", None)
            kind, frame_index = vlm.read_token_info(key)
            pooled = pool_prefill(tokens, kind, frame_index, self.pooling, self.pool_groups, what=key)
            if pooled.shape[1] != self.dims["guidance_slots"]:
                raise ValueError(
                    f"{key}: {pooled.shape[1]} thinker frame groups, the other windows have "
                    f"{self.dims['guidance_slots']}; thinker.frames must be the same for every window"
                )
            self._pooled[key] = pooled
        return self._pooled[key]

    def guidance_inputs(self, index: int) -> dict[str, torch.Tensor]:
        """The guidance inputs of window ``index`` (empty for ``guidance='none'``)."""
        key = self.refs[index].key
        _, vlm = self._readers()
        out: dict[str, torch.Tensor] = {}
        if self.guidance == "means":
            means = vlm.read_means(key)
            for s in self.streams:
                if s == "prefill" and self.pooling != "all":
                    out["guid_prefill_pool"] = torch.from_numpy(self._pooled_prefill(vlm, key))
                else:
                    out[f"guid_{s}_mean"] = torch.from_numpy(np.ascontiguousarray(means[s], np.float32))
        elif self.guidance == "tokens":
            for s in self.streams:
                tokens, mask = vlm.read_tokens(key, s, self.max_tokens)
                out[f"guid_{s}"] = torch.from_numpy(np.ascontiguousarray(tokens, np.float32))
                out[f"guid_{s}_mask"] = torch.from_numpy(np.asarray(mask, bool))
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.memoize:
            if index not in self._memo:
                self._memo[index] = self._read_sample(index)
            return dict(self._memo[index])
        return self._read_sample(index)

    def _read_sample(self, index: int) -> dict[str, torch.Tensor]:
        ref = self.refs[index]
        jepa, vlm = self._readers()
        past, future = jepa.read_jepa(ref.key)
        tg = self.targets(index)
        sample = {
            "past_latents": torch.from_numpy(np.ascontiguousarray(past, np.float32)),
            "future_latents": torch.from_numpy(np.ascontiguousarray(future, np.float32)),
            "target_joints": torch.from_numpy(tg.joints_world),
            "target_conf": torch.from_numpy(tg.conf),
            "cam_pose": torch.from_numpy(tg.cam_pose),
            "past_joints_cam": torch.from_numpy(tg.past_joints_cam),
            "past_states_cam": torch.from_numpy(tg.past_states_cam),
        }
        sample.update(self.guidance_inputs(index))
        return sample


class _EpisodeMemo:
    """The episode arrays (joints, confidences, camera pose) read from HDF5, kept per process
    across datasets: ``tj run`` and ``tj demo`` build a train and a val dataset for every
    variant and seed, and each read the same files again (15 ms of CPU per synthetic episode,
    most of a short run's setup). Keyed by the file's path, size and mtime, so a replaced file
    is read anew; least recently used first out beyond ``max_bytes``; the arrays are read-only,
    so no caller can change another's."""

    def __init__(self, max_bytes: int) -> None:
        from collections import OrderedDict

        self.max_bytes = max_bytes
        self.bytes = 0
        self.entries: OrderedDict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, video_path: str, annotation_path: str, clip: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import os

        from thinkjepa.data.egodex import read_episode

        st = os.stat(annotation_path)
        key = (annotation_path, st.st_size, st.st_mtime_ns)
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
        # the manifest only lists validated episodes: skip re-probing the video
        ep = read_episode(video_path, annotation_path, clip_id=clip, check_video=False)
        arrays = (ep.joints, ep.confidences, ep.camera_pose)
        for a in arrays:
            a.setflags(write=False)
        with self.lock:
            if key not in self.entries:
                self.entries[key] = arrays
                self.bytes += sum(a.nbytes for a in arrays)
            while self.bytes > self.max_bytes and len(self.entries) > 1:
                _, old = self.entries.popitem(last=False)
                self.bytes -= sum(a.nbytes for a in old)
        return arrays


_EPISODES = _EpisodeMemo(max_bytes=256 * 2**20)


def train_statistics(ds: WindowDataset, guidance: bool = True) -> dict[str, Any]:
    """What the model standardises with, from the windows of ``ds`` (the TRAIN split):
    ``offset_scale`` = RMS over windows, future frames, joints and axes of the offsets
    future - last observed pose (camera frame of the last observed frame; tracked joints
    only), and ``guidance`` = per stream (mean, std) over windows of the pooled guidance
    [L, K, H] (per stored layer, slot and channel). One pass, float64 sums."""
    sq, n = 0.0, 0
    sums: dict[str, list[np.ndarray]] = {}
    for i in range(len(ds)):
        tg = ds.targets(i)
        # the first step's frames only: the unit of one step's offsets whatever train.rollout_steps
        f = len(ds.refs[i].window.future)
        off = (tg.joints_cam[:f] - tg.past_joints_cam[None]).astype(np.float64)
        w = (tg.conf[:f] > 0)[..., None]
        sq += float((off**2 * w).sum())
        n += int(w.sum()) * 3
        if guidance and ds.guidance == "means":
            for key, x in ds.guidance_inputs(i).items():
                stream = key.split("_")[1]
                a = x.numpy().astype(np.float64)
                a = a[:, None] if a.ndim == 2 else a
                acc = sums.setdefault(stream, [np.zeros_like(a), np.zeros_like(a)])
                acc[0] += a
                acc[1] += a * a
    if n == 0:
        raise ValueError(f"split {ds.split!r}: no tracked future joint to compute the offset scale from")
    stats: dict[str, Any] = {"offset_scale": float(np.sqrt(sq / n)), "windows": len(ds)}
    if sums:
        m = len(ds)
        stats["guidance"] = {
            s: (torch.from_numpy(a / m).float(), torch.from_numpy(np.sqrt(np.maximum(b / m - (a / m) ** 2, 0.0))).float())
            for s, (a, b) in sums.items()
        }
    return stats


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of indices whose order is a function of ``(seed, epoch)`` only.

    ``batch_size`` is the *global* batch: step ``b`` of an epoch covers positions
    ``[b * batch_size, (b + 1) * batch_size)`` of the epoch's order whatever the number of
    processes, so a run on ``world`` processes sees the same windows at the same step as a run
    on one. With ``pad`` (training) and ``world > 1`` each rank takes its contiguous
    ``batch_size / world`` slice of that step (``batch_size`` must divide evenly); a short last
    step is padded by wrapping to the start of the order, every rank keeps the same batch
    shape, and ``valid_count(b)`` says how many leading entries of this rank's batch ``b`` are
    real (the loop gives the padding zero weight, so every window counts exactly once per
    epoch). On one process nothing is padded: the last batch is short. Without ``pad``
    (evaluation) each rank takes every ``world``-th index, in batches of
    ``ceil(batch_size / world)``: every index is seen exactly once overall.
    ``set_epoch(e, start_batch=k)`` resumes epoch ``e`` at its ``k``-th batch.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world: int = 1,
        pad: bool = True,
    ) -> None:
        if n < 1 or batch_size < 1:
            raise ValueError(f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside 0..{world - 1}")
        if pad and batch_size % world:
            raise ValueError(
                f"train.batch_size={batch_size} is the global batch and must split evenly over {world} processes "
                f"(use a multiple of {world})"
            )
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world, self.pad = rank, world, pad
        self.local_batch = batch_size // world if pad else math.ceil(batch_size / world)
        self.epoch, self.start_batch, self.n_epochs = 0, 0, 1

    def set_epoch(self, epoch: int, start_batch: int = 0, n_epochs: int = 1) -> None:
        """Iterate from batch ``start_batch`` of ``epoch`` through the end of epoch
        ``epoch + n_epochs - 1``. Spanning several epochs in one iterator lets the workers
        prefetch across epoch boundaries instead of stalling at each one."""
        if n_epochs < 1 or not 0 <= start_batch <= self.batches_per_epoch():
            raise ValueError(f"bad position: epoch {epoch}, batch {start_batch}, {n_epochs} epochs")
        self.epoch, self.start_batch, self.n_epochs = epoch, start_batch, n_epochs

    def epoch_order(self, epoch: int) -> list[int]:
        """All indices of ``epoch`` in the order every rank agrees on."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            return torch.randperm(self.n, generator=g).tolist()
        return list(range(self.n))

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of ``epoch``, in order."""
        order = self.epoch_order(epoch)
        if not self.pad:
            mine = order[self.rank :: self.world]
            return [mine[i : i + self.local_batch] for i in range(0, len(mine), self.local_batch)]
        out = []
        for b in range(self.batches_per_epoch()):
            start = b * self.batch_size + self.rank * self.local_batch
            stop = start + self.local_batch if self.world > 1 else min(start + self.local_batch, self.n)
            out.append([order[p % self.n] for p in range(start, stop)])  # p >= n: padding
        return out

    def valid_count(self, batch: int) -> int:
        """Real (not padding) entries at the head of this rank's batch ``batch`` of an epoch."""
        if not self.pad:
            return len(range(self.rank, self.n, self.world)[batch * self.local_batch :][: self.local_batch])
        start = batch * self.batch_size + self.rank * self.local_batch
        return max(0, min(self.local_batch, self.n - start))

    def batches_per_epoch(self) -> int:
        if self.pad:
            return math.ceil(self.n / self.batch_size)
        return math.ceil(len(range(self.rank, self.n, self.world)) / self.local_batch)

    def __iter__(self) -> Iterator[list[int]]:
        for e in range(self.epoch, self.epoch + self.n_epochs):
            batches = self.epoch_batches(e)
            yield from batches[self.start_batch if e == self.epoch else 0 :]

    def __len__(self) -> int:
        return self.n_epochs * self.batches_per_epoch() - self.start_batch


class Prefetcher:
    """Pulls batches from ``iterator`` on a background thread, up to ``depth`` ahead.

    Reading (without workers) or receiving batches from worker processes (unpickling shared
    tensors) then overlaps the training step instead of stalling it; both spend most of
    their time outside the GIL. The order of batches is unchanged.
    """

    def __init__(self, iterator: Iterator[Any], depth: int = 2) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(iterator,), name="batch-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, iterator: Iterator[Any]) -> None:
        try:
            for batch in iterator:
                if not self._put(("batch", batch)):
                    return
            self._put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(("error", e))

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        kind, value = self._q.get()
        if kind == "batch":
            return value
        if kind == "end":
            raise StopIteration
        raise value

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)


def _worker_init(_: int) -> None:
    # Workers only read and collate; one thread each keeps them off the trainer's cores.
    torch.set_num_threads(1)


def make_loader(
    dataset: WindowDataset,
    sampler: EpochBatchSampler,
    num_workers: int,
    pin_memory: bool | None = None,
    prefetch_factor: int = 4,
) -> DataLoader:
    """A DataLoader over ``sampler``'s batches; persistent workers, pinned memory on CUDA."""
    kw: dict[str, Any] = {}
    if num_workers > 0:
        kw.update(persistent_workers=True, prefetch_factor=prefetch_factor, worker_init_fn=_worker_init)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        # own generator: creating an iterator must not draw from the global RNG (resume parity)
        generator=torch.Generator().manual_seed(sampler.seed),
        **kw,
    )


__all__ = [
    "EpochBatchSampler",
    "GuidanceMode",
    "Prefetcher",
    "WindowDataset",
    "WindowRef",
    "guidance_mode_for",
    "make_loader",
    "split_windows",
    "train_statistics",
]

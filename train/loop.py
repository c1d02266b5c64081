"""``tj-train``: train one variant with accelerate, resumably, selecting the best by val ADE.

The same code runs on one CPU, one GPU, or many processes under ``torchrun`` / ``accelerate
launch`` (gloo on CPU, NCCL on CUDA; see ``make_accelerator``). Multi-process runs are data
parallel with ``train.batch_size`` as the *global* batch: step ``k`` trains on the same windows
with the same averaged gradient on any number of processes (``EpochBatchSampler``,
``compute_loss(share_counts=...)``), so the weights match a one-process run up to float
rounding. Rank 0 alone writes (checkpoints, ``summary.json``, TensorBoard, ``config.yaml``,
``windows.json``) and prints; the others wait at barriers. Data
comes from the caches through ``train.dataset`` (train and val splits only: the test split
is never opened here, so it cannot leak into model selection). The run folder
``<train.out>/<variant>/seed-<s>`` (one per entry of ``train.seeds``) holds the resolved ``config.yaml``, ``last.pt`` / ``best.pt``,
``windows.json`` (which windows trained and validated), ``summary.json`` and TensorBoard logs
under ``tb/``.

Resuming: a run folder with a ``last.pt`` made by the same settings *and the same data* (manifest,
cache ids, the entry of every window, the content of every episode: ``train.run_inputs``)
continues from it and ends
with the same weights as a run that was never interrupted (on CPU, bit for bit): data order
is a function of ``(seed, epoch)`` and the position inside the epoch is restored, as are the
optimizer, scheduler and every rank's RNG streams (on another number of processes, see
``_rank_rng``). SIGTERM / SIGINT finish the current step, write
``last.pt`` and raise ``TrainingStopped``; a second SIGINT stops at once.

``resume`` (``tj-train --resume / --restart``): ``auto`` resumes when settings and data match,
starts afresh (old checkpoints kept as ``*.stale-*``) when the settings changed, and refuses
when the data changed, saying what changed; ``resume`` refuses unless it can resume exactly;
``restart`` always starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from thinkjepa.cache_schema.fsio import atomic_write_json
from thinkjepa.config import PipelineConfig, TrainConfig, save_config
from thinkjepa.provenance import stage_fingerprint
from thinkjepa.stage_run import progress_bar
from thinkjepa.train.checkpoint import (
    SUMMARY,
    build_payload,
    checkpoint_path,
    load_checkpoint,
    rank_record,
    rank_states,
    restore_rng,
    save_atomic,
    seed_run_dir,
)
from thinkjepa.train.dataset import (
    EpochBatchSampler,
    GuidanceMode,
    Prefetcher,
    WindowDataset,
    guidance_mode_for,
    make_loader,
    train_statistics,
)
from thinkjepa.train.run_inputs import (
    StaleInputError,
    check_caches,
    check_entries,
    describe_changes,
    digest,
    load_inputs,
    run_inputs,
    save_inputs,
    training_data,
)

LOG_EVERY = 10
"""Steps between TensorBoard scalar writes (each one syncs the device)."""

WARMUP_STEPS = 2
"""Steps left out of the throughput figures (worker start-up, first allocations)."""

# Settings that do not change the weights a run produces: changing them keeps a run resumable.
_NEUTRAL_TRAIN_KEYS = ("out", "num_workers", "checkpoint_every", "cache_samples", "num_threads", "seeds", "dist_timeout_s")

# Where launchers put the world size: torchrun / accelerate launch, then the MPI launchers
# accelerate reads for multi-CPU runs.
_WORLD_ENV = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")

RESUME_MODES = ("auto", "resume", "restart")


class TrainingStopped(RuntimeError):
    """Training was stopped by a signal after writing ``last.pt``; rerun to resume."""


def resolve_mixed_precision(mode: str) -> str:
    """``auto`` -> ``bf16`` on a CUDA device that supports it, else ``no``."""
    if mode != "auto":
        return mode
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


class LaunchError(ValueError):
    """The launcher's environment and the process group this trainer joined disagree."""


def launch_world_size(env: dict[str, str] | None = None) -> tuple[int, str | None]:
    """(processes the launcher started, the variable that says so); (1, None) for a plain process."""
    env = os.environ if env is None else env
    for key in _WORLD_ENV:
        if env.get(key, "").strip():
            return int(env[key]), key
    return 1, None


def check_world(joined: int, env: dict[str, str] | None = None) -> None:
    """Refuse a trainer whose group is not the one its launcher started: each process would
    otherwise train its own copy and overwrite the others' checkpoints."""
    want, key = launch_world_size(env)
    if want != joined:
        raise LaunchError(
            f"the launcher started {want} processes ({key}={want}) but this trainer joined a process group of "
            f"{joined}; every process would train its own copy. Launch with torchrun or `accelerate launch "
            f"--multi_gpu --num_processes N` (CPU too), see README 'Multi-process training'"
        )


def make_accelerator(mixed_precision: str, timeout_s: float = 1800.0):
    """An ``Accelerator`` for this run that joins the launcher's process group on any device:
    NCCL on CUDA, gloo on CPU (without ``cpu=True`` accelerate ignores a torchrun group on a
    machine without CUDA, and every process trains alone). ``timeout_s`` bounds every
    collective, so a lost peer fails the run instead of hanging it.

    accelerate keeps one global state per process; in a single non-distributed process
    (``tj run`` training several variants, notebooks) a later run may ask for another
    precision, so that state is reset instead of refused."""
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    mp = resolve_mixed_precision(mixed_precision)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, mp) and not PartialState().use_distributed:
        AcceleratorState._reset_state()
    accelerator = Accelerator(
        mixed_precision=mp,
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[
            InitProcessGroupKwargs(timeout=timedelta(seconds=timeout_s)),
            # Variants and zero loss weights leave parts of the model without a gradient; the
            # set is the same every step, which static_graph handles without the per-step graph
            # walk of find_unused_parameters.
            DistributedDataParallelKwargs(static_graph=True),
        ],
    )
    check_world(accelerator.num_processes)
    return accelerator


def run_fingerprint(cfg: PipelineConfig, variant: str, guidance: str) -> str:
    """What a run's weights depend on; ``last.pt`` is resumed only under the same fingerprint."""
    train = {k: v for k, v in cfg.train.model_dump(mode="json").items() if k not in _NEUTRAL_TRAIN_KEYS}
    payload = {
        "variant": variant,
        "guidance": guidance,
        "train": train,
        "sections": cfg.section_fingerprint("model", "sampling", "encoder", "thinker", "data"),
        "stage": stage_fingerprint("train"),  # the training code and torch's version
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def lr_factor(total_steps: int, milestones: tuple[float, ...], gamma: float) -> Callable[[int], float]:
    """LR multiplier after ``step`` optimizer steps: ``gamma`` per milestone (fraction of the run) passed."""
    bounds = sorted(max(1, round(m * total_steps)) for m in milestones)
    return lambda step: gamma ** sum(step >= b for b in bounds)


def param_groups(model: torch.nn.Module, train: TrainConfig) -> list[dict[str, Any]]:
    """Head at ``lr_head``, everything else (predictor, pyramid, injection) at ``lr_predictor``.
    Weight decay applies to matrices only: decaying biases, norms and the zero-initialised
    injection gates would pull them towards zero for no regularising benefit."""
    head_ids = {id(p) for p in model.head_parameters()}
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        key = ("head" if id(p) in head_ids else "predictor", p.ndim >= 2)
        groups.setdefault(key, []).append(p)
    out = []
    for (name, decay), params in sorted(groups.items()):
        out.append({
            "params": params,
            "lr": train.lr_head if name == "head" else train.lr_predictor,
            "weight_decay": train.weight_decay if decay else 0.0,
            "name": f"{name}{'' if decay else '_no_decay'}",
        })
    return out


@torch.no_grad()
def evaluate_loader(model: torch.nn.Module, loader, device: torch.device, acc_threshold: float) -> dict[str, float]:
    """Sums of ADE/FDE/Acc terms over the loader's windows (unmasked, as ``tj-eval`` reports)."""
    from thinkjepa.train.metrics import joint_errors

    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # err sum, last-frame err sum, hits, windows
    counts = torch.zeros(2, dtype=torch.float64, device=device)  # joint-frames, last-frame joints
    for batch in loader:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        out = model(batch)
        err = joint_errors(out["joints_world"], batch["target_joints"]).double()
        sums += torch.stack([err.sum(), err[:, -1].sum(), (err < acc_threshold).sum().double(),
                             torch.tensor(float(err.shape[0]), device=device, dtype=torch.float64)])
        counts += torch.tensor([err.numel(), err[:, -1].numel()], device=device, dtype=torch.float64)
    model.train(was_training)
    return {"sums": sums, "counts": counts}


def _metrics(sums: torch.Tensor, counts: torch.Tensor) -> dict[str, float]:
    s, c = sums.tolist(), counts.tolist()
    return {"ADE": s[0] / c[0], "FDE": s[1] / c[1], "Acc": s[2] / c[0], "windows": int(s[3])}


class _StopFlag:
    """SIGTERM / SIGINT set a flag checked between steps (a step is never cut in half)."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.reason = signal.Signals(signum).name
        if signum == signal.SIGINT:
            # a second Ctrl-C means "now": back to the default behaviour
            signal.signal(signal.SIGINT, self._old.get(signal.SIGINT, signal.default_int_handler))

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals can only be handled on the main thread; the caller owns them
            return
        for s in (signal.SIGTERM, signal.SIGINT):
            self._old[s] = signal.signal(s, self._handler)
        try:
            yield self
        finally:
            for s, h in self._old.items():
                signal.signal(s, h)




def run_training(
    cfg: PipelineConfig,
    variant: str = "thinkjepa",
    *,
    guidance: GuidanceMode | None = None,
    on_step: Callable[[int], None] | None = None,
    progress: bool = True,
    seed: int | None = None,
    resume: str = "auto",
    allow_stale: bool = False,
) -> Path:
    """Train ``variant`` (a built-in name or a key of ``cfg.variants``); returns the run folder.

    ``allow_stale``: leave out windows whose cache entries are stale instead of refusing
    (``tj run --allow-partial`` while shards of a changed upstream stage are pending).

    ``guidance`` overrides how guidance is read from the VLM cache (default: what the model
    needs, see ``guidance_mode_for``). ``on_step(step)`` is called after every optimizer step
    (and after that step's checkpoint, if any). ``seed`` (default ``train.seed``) picks the
    run: it becomes ``train.seed`` and the folder ``<train.out>/<variant>/seed-<seed>``.
    ``resume`` (``RESUME_MODES``): ``auto`` resumes ``last.pt`` when settings and data match,
    starts afresh when the settings changed and refuses when the data changed; ``resume``
    refuses unless it can resume; ``restart`` sets the old checkpoints aside.
    """
    trainer = Trainer(cfg, variant, guidance=guidance, seed=seed, allow_stale=allow_stale)
    trainer.resume(resume)
    trainer.write_run_files()
    trainer.prepare()
    trainer.fit(on_step=on_step, progress=progress)
    trainer.finish()
    return trainer.run_dir


class Trainer:
    """One training run, in the parts ``run_training`` calls in this order (torchtitan's
    trainer has the same shape):

    - ``__init__`` builds: accelerator, train / val datasets, model with its train-split
      statistics, optimizer, schedule, the fresh train state;
    - ``resume`` sets aside what will not be resumed and loads ``last.pt`` if it continues;
    - ``write_run_files`` (rank 0) writes config, inputs and ``windows.json``;
    - ``prepare`` wraps model and optimizer, makes the loaders and restores the RNG streams;
    - ``fit`` runs ``train_step`` per batch, with ``validate`` and ``save`` at their steps;
    - ``finish`` writes ``summary.json``.

    The order is load-bearing: it is the order the RNG streams are drawn from (model init
    after ``set_seed``, per-rank reseeding after the resume decision, the restored streams
    last), so a resumed run ends bit for bit where an uninterrupted one does.
    """

    def __init__(self, cfg: PipelineConfig, variant: str, *, guidance: GuidanceMode | None, seed: int | None,
                 allow_stale: bool) -> None:
        from accelerate.utils import set_seed

        from thinkjepa.train.model import ThinkJEPA

        self.variant = variant
        self.cfg = vcfg = _with_seed(cfg.for_variant(variant), seed)
        self.tc = tc = vcfg.train
        self.mode = guidance or guidance_mode_for(vcfg)
        self.run_dir = seed_run_dir(cfg.path(tc.out), variant, tc.seed)
        self.accelerator = make_accelerator(tc.mixed_precision, tc.dist_timeout_s)
        self.device = self.accelerator.device
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.main = self.accelerator.is_main_process
        if not self.main:
            warnings.filterwarnings("ignore")  # one copy of every message: rank 0's
        self.fingerprint = run_fingerprint(vcfg, variant, self.mode)

        self.threads_before = torch.get_num_threads()
        if tc.num_threads:
            torch.set_num_threads(tc.num_threads)
        self.train_ds, self.val_ds, self.inputs = self._datasets(allow_stale)
        self.data = training_data(vcfg)

        self.sampler = EpochBatchSampler(len(self.train_ds), tc.batch_size, tc.seed, shuffle=True, rank=self.rank,
                                         world=self.world)
        steps_per_epoch = self.sampler.batches_per_epoch()
        self.total = tc.max_steps if tc.max_steps is not None else tc.epochs * steps_per_epoch
        if self.total < 1:
            raise ValueError(f"nothing to train: {tc.epochs} epochs x {steps_per_epoch} steps, max_steps={tc.max_steps}")

        set_seed(tc.seed)
        self.model = ThinkJEPA(vcfg.model, **self.train_ds.dims)
        # Train-split statistics become buffers (saved in every checkpoint; a resume loads them back).
        self.stats = train_statistics(self.train_ds)
        self.model.set_statistics(self.stats)
        self.model_args = dict(self.train_ds.dims)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, tc))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(self.total, tuple(tc.lr_milestones), tc.lr_gamma))
        self.state: dict[str, Any] = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best_val_ade": None,
                                      "best_step": None, "last_val_step": None, "val": None, "val_history": []}
        self.rng_state: dict[str, Any] | None = None
        self.tb = None
        self.timing = {"steps": 0, "wait": 0.0, "total": 0.0}

    def _datasets(self, allow_stale: bool) -> tuple[WindowDataset, WindowDataset | None, dict]:
        """Train and val only: the test split is never constructed here."""
        vcfg, tc, mode = self.cfg, self.tc, self.mode
        train_ds = WindowDataset(vcfg, "train", guidance=mode, memoize=tc.cache_samples)
        try:
            val_ds: WindowDataset | None = WindowDataset(vcfg, "val", guidance=mode, memoize=tc.cache_samples)
        except ValueError as e:
            warnings.warn(f"no validation ({e}); best.pt will not be written", stacklevel=4)
            val_ds = None
        if val_ds is not None and val_ds.dims != train_ds.dims:
            raise ValueError(f"val windows have shapes {val_ds.dims}, train windows {train_ds.dims}")
        return _inputs_of(vcfg, train_ds, val_ds, allow_stale)

    def resume(self, resume: str) -> None:
        """Set aside the checkpoints ``resume`` does not continue, then load ``last.pt`` if one is
        left (its RNG streams are restored in ``prepare``, after everything else drew)."""
        from accelerate.utils import set_seed

        accelerator = self.accelerator
        aside = _resume_decision(self.run_dir, self.fingerprint, self.inputs, resume)  # every rank: a refusal stops all
        accelerator.wait_for_everyone()
        if self.main:
            # summary.json is the run's "done" mark, written last: until this call finishes, nothing
            # (tj status, tj run, tj-eval) takes the folder for a finished run
            (self.run_dir / SUMMARY).unlink(missing_ok=True)
            _set_aside(self.run_dir, aside)
        accelerator.wait_for_everyone()
        last = checkpoint_path(self.run_dir, "last")
        if last.exists():
            payload = load_checkpoint(last)
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.scheduler.load_state_dict(payload["scheduler"])
            self.state.update(payload["train_state"])
            self.rng_state = _rank_rng(payload, self.rank, self.world, self.tc.seed)
        elif self.world > 1:
            set_seed(self.tc.seed + self.rank)  # per-rank dropout noise; the init above was shared

    def write_run_files(self) -> None:
        """Rank 0: the resolved config, the inputs record and which windows train and validate."""
        if not self.main:
            return
        train_ds, val_ds = self.train_ds, self.val_ds
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.run_dir)
        save_inputs(self.run_dir, self.inputs)
        (self.run_dir / "windows.json").write_text(json.dumps(
            {"train": train_ds.window_ids, "val": val_ds.window_ids if val_ds else [],
             "missing": {"train": train_ds.missing, "val": val_ds.missing if val_ds else []}}, indent=1))

    def prepare(self) -> None:
        """Model and optimizer under accelerate, the loaders, then the restored RNG streams."""
        accelerator, tc = self.accelerator, self.tc
        self.model, self.optimizer = accelerator.prepare(self.model, self.optimizer)
        self.loader = make_loader(self.train_ds, self.sampler, tc.num_workers)
        self.val_loader = None
        if self.val_ds is not None:
            val_sampler = EpochBatchSampler(len(self.val_ds), tc.batch_size, tc.seed, shuffle=False, rank=self.rank,
                                            world=self.world, pad=False)
            self.val_loader = make_loader(self.val_ds, val_sampler, min(tc.num_workers, 1))
        if self.rng_state is not None:
            restore_rng(self.rng_state)  # last: nothing above may draw from the restored streams
        self.share_counts = None if self.world == 1 else (lambda c: accelerator.reduce(c, "mean"))

    def save(self, which: str) -> None:
        """``last.pt`` or ``best.pt``: every rank's record gathered, rank 0 writes atomically."""
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        ranks = _gather_rank_records(rank_record(self.rank, self.state), self.world)
        if self.main:
            payload = build_payload(
                model_state=accelerator.get_state_dict(self.model),
                optimizer_state=self.optimizer.state_dict(),
                scheduler_state=self.scheduler.state_dict(),
                train_state=self.state,
                model_args=self.model_args,
                model_cfg=self.cfg.model.model_dump(mode="json"),
                variant=self.variant,
                fingerprint=self.fingerprint,
                ranks=ranks,
                inputs=digest(self.inputs),
            )
            save_atomic(payload, checkpoint_path(self.run_dir, which))
        accelerator.wait_for_everyone()

    def validate(self) -> None:
        """Val metrics summed over ranks into the state and TensorBoard; a new best saves ``best.pt``."""
        if self.val_loader is None:
            return
        accelerator, state = self.accelerator, self.state
        res = evaluate_loader(accelerator.unwrap_model(self.model), self.val_loader, self.device,
                              self.cfg.eval.acc_threshold_m)
        sums, counts = accelerator.reduce(res["sums"], "sum"), accelerator.reduce(res["counts"], "sum")
        m = _metrics(sums, counts)
        state["val"], state["last_val_step"] = m, state["step"]
        state["val_history"] = [*state["val_history"], {"step": state["step"], **m}]
        if self.tb is not None:
            for k in ("ADE", "FDE", "Acc"):
                self.tb.add_scalar(f"val/{k}", m[k], state["step"])
        if state["best_val_ade"] is None or m["ADE"] < state["best_val_ade"]:
            state["best_val_ade"], state["best_step"] = m["ADE"], state["step"]
            self.save("best")

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimizer step on ``batch`` (on the device); returns this rank's loss logs."""
        from thinkjepa.train.losses import compute_loss

        model, state = self.model, self.state
        weight = _padding_weight(self.sampler, state["batch_in_epoch"], batch, self.device)
        model.train()
        out = model(batch)
        loss, logs = compute_loss(out, batch, self.tc, joint_scale=self.joint_scale, sample_weight=weight,
                                  share_counts=self.share_counts)
        if not math.isfinite(logs["loss"]):
            raise FloatingPointError(f"step {state['step']}: loss is {logs['loss']} ({self.variant})")
        self.accelerator.backward(loss)
        if self.tc.grad_clip:
            self.accelerator.clip_grad_norm_(model.parameters(), self.tc.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        state["batch_in_epoch"] += 1
        return logs

    def _log(self, logs: dict[str, float], bar, task) -> None:
        step = self.state["step"]
        if step % LOG_EVERY == 0 or step == 1:
            logs = _mean_over_ranks(logs, self.accelerator)
        if self.tb is not None and (step % LOG_EVERY == 0 or step == 1):
            for k, v in logs.items():
                self.tb.add_scalar(f"train/{k}", v, step)
            for g in self.optimizer.param_groups:
                self.tb.add_scalar(f"lr/{g['name']}", g["lr"], step)
            if self.timing["total"]:
                self.tb.add_scalar("perf/data_wait_frac", self.timing["wait"] / self.timing["total"], step)
        bar.update(task, completed=step, status=f"loss {logs['loss']:.4f} ade {logs['ade']:.4f}")

    def _after_step(self, spe: int, stop: _StopFlag, on_step: Callable[[int], None] | None) -> None:
        """Epoch rollover, validation and checkpoint at their steps, the callback, a requested stop."""
        state, tc = self.state, self.tc
        step = state["step"]
        if state["batch_in_epoch"] == spe:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
            if tc.val_every_steps is None and state["epoch"] % max(1, tc.eval_every) == 0:
                self.validate()
        if tc.val_every_steps is not None and step % tc.val_every_steps == 0:
            self.validate()
        # No extra save at epoch ends: a resume redoes the steps (and validations)
        # since the last checkpoint exactly, so only the periodic ones are needed.
        if tc.checkpoint_every and step % tc.checkpoint_every == 0:
            self.save("last")
        if on_step is not None:
            on_step(step)
        if _stop_requested(stop, self.accelerator):
            self.save("last")
            raise TrainingStopped(
                f"{self.variant}: stopped by {stop.reason or 'a signal'} at step {step}; "
                f"checkpoint saved to {checkpoint_path(self.run_dir, 'last')}, rerun to resume"
            )

    def fit(self, *, on_step: Callable[[int], None] | None, progress: bool) -> None:
        """Train from the state's step to the total; validates at step 0 (a fresh run) and at the
        end, and leaves ``last.pt`` at the last step."""
        state, total, sampler, timing = self.state, self.total, self.sampler, self.timing
        if self.main:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=state["step"] or None)
        it: Prefetcher | None = None
        stop = _StopFlag()
        try:
            with stop.installed(), progress_bar(progress and self.main, f"train {self.variant}") as bar:
                task = bar.add_task("train", total=total, completed=state["step"], status="")
                spe = sampler.batches_per_epoch()
                left_in_epoch = spe - state["batch_in_epoch"]
                more_epochs = math.ceil(max(0, total - state["step"] - left_in_epoch) / spe)
                sampler.set_epoch(state["epoch"], state["batch_in_epoch"], n_epochs=1 + more_epochs)
                # one iterator for the whole run: workers prefetch across epoch boundaries
                it = Prefetcher(iter(self.loader)) if state["step"] < total else None
                self.joint_scale = self.accelerator.unwrap_model(self.model).joint_scale
                if state["step"] == 0 and state["last_val_step"] is None:
                    self.validate()  # the untrained model is a candidate too: best.pt never hides that training hurt
                while state["step"] < total:
                    t0 = time.perf_counter()
                    batch = next(it)
                    batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                    t1 = time.perf_counter()
                    logs = self.train_step(batch)
                    t2 = time.perf_counter()
                    if state["step"] > WARMUP_STEPS:
                        timing["steps"] += 1
                        timing["wait"] += t1 - t0
                        timing["total"] += t2 - t0
                    self._log(logs, bar, task)
                    self._after_step(spe, stop, on_step)
                if state["last_val_step"] != state["step"]:
                    self.validate()
                self.save("last")
        finally:
            if it is not None:
                it.close()
            if self.tb is not None:
                self.tb.close()

    def finish(self) -> None:
        """Rank 0 writes ``summary.json``; the thread count set for training is given back."""
        from thinkjepa.train.model import gates_tanh

        state, tc, timing = self.state, self.tc, self.timing
        if self.main:
            summary = {
                "variant": self.variant,
                "seed": tc.seed,
                "fingerprint": self.fingerprint,
                "data": self.data,
                "guidance": self.mode,
                "steps": state["step"],
                "epochs": state["epoch"],
                "best_val_ade": state["best_val_ade"],
                "best_step": state["best_step"],
                "val": state["val"],
                "val_history": state["val_history"],
                "offset_scale_m": self.stats["offset_scale"],
                "gates_tanh": gates_tanh(self.accelerator.unwrap_model(self.model)),
                "device": str(self.device),
                "processes": self.world,
                "batch_size": tc.batch_size,
                "batch_per_process": self.sampler.local_batch,
                "mixed_precision": self.accelerator.mixed_precision,
                # throughput of this call only (a resumed call measures its own steps)
                "timed_steps": timing["steps"],
                "steps_per_s": timing["steps"] / timing["total"] if timing["total"] else None,
                "data_wait_frac": timing["wait"] / timing["total"] if timing["total"] else None,
            }
            atomic_write_json(self.run_dir / SUMMARY, summary, indent=1)
        self.accelerator.wait_for_everyone()
        torch.set_num_threads(self.threads_before)


def _with_seed(vcfg: PipelineConfig, seed: int | None) -> PipelineConfig:
    if seed is None:
        return vcfg
    return vcfg.model_copy(update={"train": vcfg.train.model_copy(update={"seed": int(seed)})})


def train_seeds(
    cfg: PipelineConfig,
    variant: str,
    seeds: list[int] | None = None,
    *,
    skip_finished: bool = False,
    progress: bool = True,
    resume: str = "auto",
    allow_stale: bool = False,
) -> dict[int, tuple[Path, bool]]:
    """Train ``variant`` once per seed (default ``train.seeds``): ``{seed: (run_dir, ran)}``.

    With ``skip_finished`` a seed whose run finished under the settings it would get now
    (``summary.json`` carries the same fingerprint) is not touched: ``tj run`` reruns only the
    seeds whose inputs changed. ``resume`` is passed to every ``run_training`` (``restart``
    also retrains finished seeds)."""
    out: dict[int, tuple[Path, bool]] = {}
    data = training_data(cfg) if skip_finished else None
    for seed in cfg.train.seeds if seeds is None else seeds:
        vcfg = _with_seed(cfg.for_variant(variant), seed)
        run_dir = seed_run_dir(cfg.path(vcfg.train.out), variant, seed)
        fingerprint = run_fingerprint(vcfg, variant, guidance_mode_for(vcfg))
        mode = resume
        if skip_finished and resume != "restart":
            done = _summary(run_dir)
            if _finished(run_dir, fingerprint, data):
                out[seed] = (run_dir, False)
                continue
            if done is not None and done.get("fingerprint") == fingerprint:
                mode = "restart"  # finished on data that has changed since: train again on the new data
        out[seed] = (run_training(cfg, variant, seed=seed, progress=progress, resume=mode,
                                  allow_stale=allow_stale), True)
    return out


def _summary(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / SUMMARY).read_text())
    except (OSError, ValueError):
        return None


def _finished(run_dir: Path, fingerprint: str, data: dict | None = None) -> bool:
    """The run finished (``summary.json``, written last) under ``fingerprint`` and, when given,
    on ``data`` (``run_inputs.training_data``)."""
    summary = _summary(run_dir)
    if summary is None or not checkpoint_path(run_dir, "last").exists():
        return False
    return summary.get("fingerprint") == fingerprint and (data is None or summary.get("data") == data)


def finished_runs(cfg: PipelineConfig) -> dict[str, str | None]:
    """``{variant/seed-N: fingerprint}`` of every run ``tj run`` trains, from its ``summary.json``
    (``None`` where the run has not finished: never trained, failed or interrupted)."""
    out: dict[str, str | None] = {}
    for variant in cfg.eval.variants:
        for seed in cfg.train.seeds:
            run_dir = seed_run_dir(cfg.path(cfg.train.out), variant, seed)
            done = _summary(run_dir) if checkpoint_path(run_dir, "last").exists() else None
            out[f"{variant}/seed-{seed}"] = (done or {}).get("fingerprint")
    return out


def _inputs_of(
    cfg: PipelineConfig, train_ds: WindowDataset, val_ds: WindowDataset | None, allow_stale: bool = False
) -> tuple[WindowDataset, WindowDataset | None, dict]:
    """Check the caches against the config, then describe the data this run reads. With
    ``allow_stale`` stale windows are left out (with a warning) instead of refused: the
    datasets returned are the ones to train on."""
    from thinkjepa.cache_schema import CacheReader

    jepa = CacheReader(train_ds.jepa_url)
    vlm = CacheReader(train_ds.vlm_url) if train_ds.vlm_url else None
    check_caches(cfg, jepa, vlm)
    refs = [*train_ds.refs, *(val_ds.refs if val_ds else [])]
    stale = check_entries(cfg, refs, jepa, vlm, allow_stale=allow_stale)
    if stale:
        warnings.warn(f"--allow-partial: {len(stale)} of {len(refs)} windows are stale in the caches (their shards "
                      f"are pending) and are left out (first: {sorted(stale)[:3]})", stacklevel=3)

        def fresh(ds: WindowDataset, split: str) -> WindowDataset | None:
            keep = [r for r in ds.refs if r.key not in stale]
            if not keep:
                return None
            return WindowDataset(cfg, split, guidance=ds.guidance, memoize=cfg.train.cache_samples, windows=keep)

        train_ds = fresh(train_ds, "train")
        if train_ds is None:
            raise StaleInputError("--allow-partial: every train window is stale; run the pending shards first")
        val_ds = fresh(val_ds, "val") if val_ds is not None else None
        refs = [*train_ds.refs, *(val_ds.refs if val_ds else [])]
    ids = {"train": train_ds.window_ids, "val": val_ds.window_ids if val_ds else []}
    episodes = {r.window.clip_id: (r.video_path, r.annotation_path) for r in refs}
    return train_ds, val_ds, run_inputs(cfg, ids, train_ds.jepa_url, train_ds.vlm_url, episodes)


def _resume_decision(run_dir: Path, fingerprint: str, inputs: dict, resume: str) -> list[Path]:
    """The checkpoints to set aside before starting (none: resume ``last.pt`` or start afresh
    in an empty folder); StaleInputError when ``resume`` forbids what the folder holds."""
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
    present = [p for p in (checkpoint_path(run_dir, w) for w in ("last", "best")) if p.exists()]
    if resume == "restart":
        return present
    last = checkpoint_path(run_dir, "last")
    if not last.exists():
        if resume == "resume":
            raise StaleInputError(f"{run_dir}: nothing to resume (no {last.name}); drop --resume to start")
        return [p for p in present if _fingerprint_of(p) != fingerprint]
    payload = _load_or_none(last)
    if payload is None or payload["fingerprint"] != fingerprint:
        if resume == "resume":
            raise StaleInputError(f"{run_dir}: {last.name} was made with other settings; refusing to resume "
                                  "(--restart starts over)")
        return present
    changes = describe_changes(payload.get("inputs") or None, digest(inputs), load_inputs(run_dir), inputs)
    if changes:
        raise StaleInputError(
            f"{run_dir}: the data changed since {last.name} was written: {'; '.join(changes)}. "
            "Refusing to resume on other data: pass --restart to start over (the old checkpoints are kept as "
            "*.stale-*), or restore the data to resume")
    return [p for p in present if _fingerprint_of(p) != fingerprint]


def _load_or_none(path: Path) -> dict | None:
    try:
        return load_checkpoint(path)
    except ValueError as e:  # an older format (not weights_only-safe) or damaged: never resumed
        warnings.warn(str(e), stacklevel=4)
        return None


def _fingerprint_of(path: Path) -> str | None:
    payload = _load_or_none(path)
    return None if payload is None else payload["fingerprint"]


def _set_aside(run_dir: Path, paths: list[Path]) -> None:
    """Rename checkpoints that will not be resumed (``*.stale-<time>.pt``): evaluation can never
    pick up a ``best.pt`` of another configuration or other data."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in paths:
        stale = path.with_name(f"{path.stem}.stale-{stamp}.pt")
        path.rename(stale)
        warnings.warn(f"{run_dir}: {path.name} was made with other settings or data; kept as {stale.name}",
                      stacklevel=4)


def _gather_rank_records(record: dict[str, Any], world: int) -> list[dict[str, Any]]:
    """Every rank's data position and RNG record, in rank order (a collective: all ranks call it)."""
    if world == 1:
        return [record]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, record)
    return out


def _rank_rng(payload: dict[str, Any], rank: int, world: int, seed: int) -> dict[str, Any] | None:
    """The RNG state this rank resumes with, or ``None`` after reseeding.

    Same world size: the rank's own saved streams (its saved data position must be the run's).
    Another world size: weights, optimizer, schedule and data position carry over unchanged
    (``train.batch_size`` is global, so step ``k`` covers the same windows on any number of
    processes), and each rank's streams are reseeded from ``(seed, step, rank)``: only the
    dropout noise differs from an uninterrupted run."""
    from accelerate.utils import set_seed

    records, ts = rank_states(payload), payload["train_state"]
    if len(records) == world:
        rec = records[rank]
        if rec["rank"] != rank or (rec["epoch"], rec["batch_in_epoch"]) != (ts["epoch"], ts["batch_in_epoch"]):
            raise ValueError(f"checkpoint rank record {rec['rank']} is at epoch {rec['epoch']} batch "
                             f"{rec['batch_in_epoch']}, the run at epoch {ts['epoch']} batch {ts['batch_in_epoch']}")
        return rec["rng"]
    if rank == 0:
        warnings.warn(
            f"resuming a {len(records)}-process checkpoint (step {ts['step']}) on {world} processes: weights, "
            "optimizer, schedule and data position carry over; dropout noise is reseeded per rank", stacklevel=4)
    set_seed(seed + 1_000_003 * (ts["step"] + 1) + rank)
    return None


def _padding_weight(sampler: EpochBatchSampler, batch_in_epoch: int, batch: dict[str, torch.Tensor],
                    device: torch.device) -> torch.Tensor | None:
    """Per-window loss weight of this rank's batch: 0 for the padding of a short last step."""
    size = next(iter(batch.values())).shape[0]
    valid = sampler.valid_count(batch_in_epoch)
    if sampler.world > 1 and size != sampler.local_batch:
        raise RuntimeError(f"rank {sampler.rank}: batch of {size} windows, expected {sampler.local_batch}")
    if valid == size:
        return None
    return (torch.arange(size, device=device) < valid).float()


def _mean_over_ranks(logs: dict[str, float], accelerator) -> dict[str, float]:
    """Train scalars averaged over the ranks: the losses exactly (each rank holds its share of the
    global loss), ``ade`` as the mean of the ranks' batch ADEs."""
    if accelerator.num_processes == 1:
        return logs
    values = accelerator.reduce(torch.tensor(list(logs.values()), device=accelerator.device), "mean")
    return dict(zip(logs, values.tolist(), strict=True))


def _stop_requested(stop: _StopFlag, accelerator) -> bool:
    if accelerator.num_processes == 1:
        return stop.reason is not None
    # every rank must stop at the same step, or the collectives of the next one hang
    flag = torch.tensor([1.0 if stop.reason else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(flag, "sum").item() > 0)


__all__ = [
    "LaunchError",
    "RESUME_MODES",
    "StaleInputError",
    "Trainer",
    "TrainingStopped",
    "check_world",
    "evaluate_loader",
    "launch_world_size",
    "lr_factor",
    "make_accelerator",
    "param_groups",
    "resolve_mixed_precision",
    "run_fingerprint",
    "run_training",
    "train_seeds",
    "finished_runs",
]

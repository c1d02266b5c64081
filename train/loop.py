"""``tj-train``: one training run of one variant with accelerate, resumably, selecting the best
checkpoint by val ADE. The ``Trainer`` is the loop; its parts live beside it: the launcher
and trackers (``train.launch``), the data it reads (``train.run_inputs.TrainInputs``), the
schedule and parameter groups (``train.schedule``), validation (``train.validate``), the
checkpoints and the resume policy (``train.checkpoint``), the rank collectives
(``train.ranks``), clean stops on signals (``train.signals``) and the seed loop
(``train.seeds``).

The same code runs on one CPU, one GPU, or many processes under ``torchrun`` / ``accelerate
launch``. Multi-process runs are data parallel with ``train.batch_size`` as the *global*
batch: step ``k`` trains on the same windows with the same averaged gradient on any number
of processes (``EpochBatchSampler``, ``compute_loss(share_counts=...)``). Rank 0 alone writes
(checkpoints, ``summary.json``, trackers, ``config.yaml``, ``windows.json``). The run folder
``<train.out>/<variant>/seed-<s>`` holds the resolved ``config.yaml``, ``last.pt`` /
``best.pt``, ``windows.json``, ``inputs.json``, the tracker logs (TensorBoard under ``tb/``)
and, written last, ``summary.json``: the mark of a finished run.

Resuming: a ``last.pt`` made by the same settings and the same data continues and ends with
the same weights as a run that was never interrupted (on CPU, bit for bit): data order is a
function of ``(seed, epoch)``, and the position inside the epoch, the optimizer, scheduler
and every rank's RNG streams are restored (``RESUME_MODES`` says when it resumes).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from thinkjepa.cache_schema.fsio import atomic_write_json
from thinkjepa.config import PipelineConfig, save_config
from thinkjepa.provenance import stage_fingerprint
from thinkjepa.stage_run import progress_bar
from thinkjepa.train.checkpoint import (
    RESUME_MODES,
    SUMMARY,
    build_payload,
    checkpoint_path,
    load_checkpoint,
    rank_record,
    restore_rng,
    resume_decision,
    save_atomic,
    seed_run_dir,
    set_aside,
)
from thinkjepa.train.dataset import (
    EpochBatchSampler,
    GuidanceMode,
    Prefetcher,
    guidance_mode_for,
    make_loader,
    train_statistics,
)
from thinkjepa.train.export import export_after_training
from thinkjepa.train.launch import make_accelerator
from thinkjepa.train.ranks import gather_rank_records, mean_over_ranks, padding_weight, rank_rng
from thinkjepa.train.run_inputs import StaleInputError, TrainInputs, digest, run_fingerprint, save_inputs
from thinkjepa.train.schedule import lr_factor, param_groups
from thinkjepa.train.signals import StopFlag, stop_requested
from thinkjepa.train.validate import evaluate_loader, val_metrics

LOG_EVERY = 10
"""Steps between tracker scalar writes (each one syncs the device)."""

WARMUP_STEPS = 2
"""Steps left out of the throughput figures (worker start-up, first allocations)."""


class TrainingStopped(RuntimeError):
    """Training was stopped by a signal after writing ``last.pt``; rerun to resume."""


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
    ``resume``: one of ``RESUME_MODES`` (``train.checkpoint``)."""
    trainer = Trainer(cfg, variant, guidance=guidance, seed=seed, allow_stale=allow_stale)
    trainer.resume(resume)
    trainer.write_run_files()
    trainer.prepare()
    trainer.fit(on_step=on_step, progress=progress)
    trainer.finish()
    if trainer.main:  # the release format beside the resume checkpoint (train.hub)
        export_after_training(trainer.run_dir)
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
        self.cfg = vcfg = with_seed(cfg.for_variant(variant), seed)
        self.tc = tc = vcfg.train
        self.mode = guidance or guidance_mode_for(vcfg)
        self.run_dir = seed_run_dir(cfg.path(tc.out), variant, tc.seed)
        self.accelerator = make_accelerator(tc.mixed_precision, tc.dist_timeout_s, log_with=tc.log_with,
                                            project_dir=self.run_dir)
        self.device = self.accelerator.device
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.main = self.accelerator.is_main_process
        if not self.main:
            warnings.filterwarnings("ignore")  # one copy of every message: rank 0's
        self.fingerprint = run_fingerprint(vcfg, variant, self.mode)

        self.threads_before = torch.get_num_threads()
        if tc.num_threads:
            torch.set_num_threads(tc.num_threads)
        self.inputs = TrainInputs(vcfg, self.mode, allow_stale=allow_stale)
        self.train_ds, self.val_ds = self.inputs.train, self.inputs.val
        self.code = stage_fingerprint("train")  # the training code and torch's version

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
        self.timing = {"steps": 0, "wait": 0.0, "total": 0.0}

    def resume(self, resume: str) -> None:
        """Set aside the checkpoints ``resume`` does not continue, then load ``last.pt`` if one is
        left (its RNG streams are restored in ``prepare``, after everything else drew)."""
        from accelerate.utils import set_seed

        accelerator = self.accelerator
        aside = resume_decision(self.run_dir, self.fingerprint, self.inputs.record, resume)  # every rank: a refusal stops all
        accelerator.wait_for_everyone()
        if self.main:
            # summary.json is the run's "done" mark, written last: until this call finishes, nothing
            # (tj status, tj run, tj-eval) takes the folder for a finished run
            (self.run_dir / SUMMARY).unlink(missing_ok=True)
            set_aside(self.run_dir, aside)
        accelerator.wait_for_everyone()
        last = checkpoint_path(self.run_dir, "last")
        if last.exists():
            payload = load_checkpoint(last)
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.scheduler.load_state_dict(payload["scheduler"])
            self.state.update(payload["train_state"])
            self.rng_state = rank_rng(payload, self.rank, self.world, self.tc.seed)
        elif self.world > 1:
            set_seed(self.tc.seed + self.rank)  # per-rank dropout noise; the init above was shared

    def write_run_files(self) -> None:
        """Rank 0: the resolved config, the inputs record and which windows train and validate."""
        if not self.main:
            return
        train_ds, val_ds = self.train_ds, self.val_ds
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.run_dir)
        save_inputs(self.run_dir, self.inputs.record)
        atomic_write_json(self.run_dir / "windows.json", {
            "train": train_ds.window_ids, "val": val_ds.window_ids if val_ds else [],
            "missing": {"train": train_ds.missing, "val": val_ds.missing if val_ds else []}}, durable=False, indent=1)

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
        ranks = gather_rank_records(rank_record(self.rank, self.state), self.world)
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
                inputs=digest(self.inputs.record),
            )
            save_atomic(payload, checkpoint_path(self.run_dir, which))
        accelerator.wait_for_everyone()

    def validate(self) -> None:
        """Val metrics summed over ranks into the state and TensorBoard; a new best saves ``best.pt``."""
        if self.val_loader is None:
            return
        accelerator, state = self.accelerator, self.state
        res = evaluate_loader(accelerator.unwrap_model(self.model), self.val_loader, self.device,
                              self.cfg.eval.acc_threshold_m, self.tc.rollout_steps, self.tc.rollout_mode)
        sums, counts = accelerator.reduce(res["sums"], "sum"), accelerator.reduce(res["counts"], "sum")
        m = val_metrics(sums, counts)
        state["val"], state["last_val_step"] = m, state["step"]
        state["val_history"] = [*state["val_history"], {"step": state["step"], **m}]
        self.accelerator.log({f"val/{k}": m[k] for k in ("ADE", "FDE", "Acc")}, step=state["step"])
        if state["best_val_ade"] is None or m["ADE"] < state["best_val_ade"]:
            state["best_val_ade"], state["best_step"] = m["ADE"], state["step"]
            self.save("best")

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimizer step on ``batch`` (on the device); returns this rank's loss logs."""
        from thinkjepa.train.losses import compute_loss

        model, state = self.model, self.state
        weight = padding_weight(self.sampler, state["batch_in_epoch"], batch, self.device)
        model.train()
        out = model(batch) if self.tc.rollout_steps == 1 else \
            model(batch, rollout_steps=self.tc.rollout_steps, rollout_mode=self.tc.rollout_mode)
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
            logs = mean_over_ranks(logs, self.accelerator)
        if step % LOG_EVERY == 0 or step == 1:
            scalars = {f"train/{k}": v for k, v in logs.items()}
            scalars.update({f"lr/{g['name']}": g["lr"] for g in self.optimizer.param_groups})
            if self.timing["total"]:
                scalars["perf/data_wait_frac"] = self.timing["wait"] / self.timing["total"]
            self.accelerator.log(scalars, step=step)
        bar.update(task, completed=step, status=f"loss {logs['loss']:.4f} ade {logs['ade']:.4f}")

    def _after_step(self, spe: int, stop: StopFlag, on_step: Callable[[int], None] | None) -> None:
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
        if stop_requested(stop, self.accelerator):
            self.save("last")
            raise TrainingStopped(
                f"{self.variant}: stopped by {stop.reason or 'a signal'} at step {step}; "
                f"checkpoint saved to {checkpoint_path(self.run_dir, 'last')}, rerun to resume"
            )

    def fit(self, *, on_step: Callable[[int], None] | None, progress: bool) -> None:
        """Train from the state's step to the total; validates at step 0 (a fresh run) and at the
        end, and leaves ``last.pt`` at the last step."""
        state, total, sampler, timing = self.state, self.total, self.sampler, self.timing
        # a resumed run drops the events its interrupted self logged after the resumed step
        self.accelerator.init_trackers("tb", init_kwargs={"tensorboard": {"purge_step": state["step"] or None}})
        it: Prefetcher | None = None
        stop = StopFlag()
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
            # each tracker's own finish, not end_training(): that also destroys the process group,
            # which the next seed or variant of this process (tj run under torchrun) still needs
            for tracker in self.accelerator.trackers:
                tracker.finish()

    def finish(self) -> None:
        """Rank 0 writes ``summary.json``; the thread count set for training is given back."""
        from thinkjepa.train.model import gates_tanh

        state, tc, timing = self.state, self.tc, self.timing
        if self.main:
            summary = {
                "variant": self.variant, "seed": tc.seed, "fingerprint": self.fingerprint, "data": self.inputs.data,
                "code": self.code, "guidance": self.mode, "steps": state["step"], "epochs": state["epoch"],
                "best_val_ade": state["best_val_ade"], "best_step": state["best_step"], "val": state["val"],
                "val_history": state["val_history"], "offset_scale_m": self.stats["offset_scale"],
                "gates_tanh": gates_tanh(self.accelerator.unwrap_model(self.model)), "device": str(self.device),
                "processes": self.world, "batch_size": tc.batch_size, "batch_per_process": self.sampler.local_batch,
                "mixed_precision": self.accelerator.mixed_precision,
                # throughput of this call only (a resumed call measures its own steps)
                "timed_steps": timing["steps"],
                "steps_per_s": timing["steps"] / timing["total"] if timing["total"] else None,
                "data_wait_frac": timing["wait"] / timing["total"] if timing["total"] else None,
            }
            atomic_write_json(self.run_dir / SUMMARY, summary, indent=1)
        self.accelerator.wait_for_everyone()
        torch.set_num_threads(self.threads_before)


def with_seed(vcfg: PipelineConfig, seed: int | None) -> PipelineConfig:
    if seed is None:
        return vcfg
    return vcfg.model_copy(update={"train": vcfg.train.model_copy(update={"seed": int(seed)})})


__all__ = ["RESUME_MODES", "StaleInputError", "Trainer", "TrainingStopped", "run_training", "with_seed"]

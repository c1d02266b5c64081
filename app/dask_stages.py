"""`tj run --scheduler ADDRESS|local:N`: the sharded stages (extract, encode) as tasks on a
dask.distributed cluster, then the stages that need every shard.

One task per shard, each running exactly what a job-array task runs by hand
(``tj run --shard I/N extract encode``, in a child process of the worker), so the caches and
stamps are the same as with shards launched by hand, and the engine (vLLM starts processes of
its own) never runs inside a daemonic dask worker. Each task asks for the worker resource
``GPU=1`` when the cluster's workers advertise it (``dask worker --resources GPU=1``; a
``local:N`` cluster gives each of its N worker processes one), so one shard runs per GPU.
A task whose worker dies is retried by the scheduler on another worker (up to its
``allowed-failures``), and a task that exits non-zero is retried ``RETRIES`` times; the child
dies with its worker (Linux ``PR_SET_PDEATHSIG``), so the retry finds the part's writer lock
free, and resumes from what the lost attempt committed. Index runs first in this process;
train and eval run here once every shard task succeeded.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from thinkjepa.config import PipelineConfig, save_config

RETRIES = 2
SHARDED = ("extract", "encode")
SCHEDULER_TIMEOUT_S = 30


def parse_scheduler(scheduler: str) -> int | None:
    """N of ``local:N`` (a LocalCluster of N worker processes); None for a scheduler address."""
    if not scheduler.startswith("local"):
        return None
    try:
        n = int(scheduler.partition(":")[2] or "1")
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"--scheduler {scheduler!r}: expected local:N with N >= 1 worker processes, or an address "
                         "such as tcp://host:8786")
    return n


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    import ctypes
    import signal

    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: a lost worker takes its shard with it
    except (OSError, AttributeError):
        pass


def run_shard_task(index: int, count: int, config: str, stages: list[str], force: bool, log_dir: str) -> dict:
    """One shard, on a worker: `tj run --shard I/N STAGES` in a child process (raises on failure)."""
    from thinkjepa.shards import part_name

    part = part_name(index, count)
    log = Path(log_dir) / f"{part}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", "from thinkjepa.app.cli.main import app; app()", "run", "--config", config,
           "--shard", f"{index}/{count}", "--no-progress", *(["--force"] if force else []), *stages]
    with open(log, "ab") as out:
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT,
                             preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"shard {part} exited with status {rc} (log {log}):\n" + "\n".join(tail))
    return {"shard": part, "log": str(log)}


def _shard_count(cfg: PipelineConfig, workers: int) -> int:
    """The shard count the VLM store was written with, else one shard per worker."""
    from thinkjepa.cache_schema import CacheReader, store_exists
    from thinkjepa.stage_run import infer_shard_count

    url = cfg.url(cfg.thinker.cache)
    if store_exists(url):
        parts = {b[2] for b in CacheReader(url).briefs().values()}
        if parts:
            return infer_shard_count(parts)
    return max(1, workers)


def _client(scheduler: str, workdir: Path):
    import logging

    from distributed import Client, LocalCluster

    n = parse_scheduler(scheduler)
    if n is not None:
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, resources={"GPU": 1},
                               dashboard_address=None, silence_logs=logging.ERROR,
                               local_directory=str(workdir / "state" / "dask"))
        return Client(cluster), cluster
    try:
        return Client(scheduler, timeout=f"{SCHEDULER_TIMEOUT_S}s"), None
    except (OSError, TimeoutError) as e:
        raise ValueError(f"cannot reach the dask scheduler at {scheduler!r}: {e}") from e


def run_sharded(
    cfg: PipelineConfig,
    stages: list[str],
    scheduler: str,
    shards: int | None = None,
    *,
    force: bool = False,
    on_event: Callable[[str, str, dict[str, Any]], None] | None = None,
    client: Any = None,
) -> list[tuple[str, str]]:
    """The shards of ``stages``' sharded stages as tasks on ``scheduler`` (or ``client``).
    Returns ``(stage, "ran" | "fresh")`` pairs; raises RuntimeError naming the shards that
    failed after their retries (rerun them with `tj run --shard I/N`)."""
    from thinkjepa.app import pipeline
    from thinkjepa.shards import part_name

    sharded = [s for s in SHARDED if s in stages]
    if not sharded:
        return []
    rows = {r["stage"]: r for r in pipeline.status(cfg)}
    if not force and not any(rows[s]["stale"] for s in sharded):
        for s in sharded:
            if on_event:
                on_event(s, "fresh", {})
        return [(s, "fresh") for s in sharded]
    workdir = Path(cfg.path("{workdir}"))
    config = str(save_config(cfg, workdir / "state" / "dask", "config.yaml"))
    own = client is None
    cluster = None
    if own:
        client, cluster = _client(scheduler, workdir)
    try:
        info = client.scheduler_info()["workers"]
        n = shards or _shard_count(cfg, len(info))
        gpu = any("GPU" in w.get("resources", {}) for w in info.values())
        for s in sharded:
            if on_event:
                on_event(s, "start", {"reasons": rows[s]["reasons"], "shard": f"{n} shards on {scheduler}"})
        futures = [
            client.submit(run_shard_task, i, n, config, sharded, force, str(workdir / "logs" / "dask"),
                          key=f"tj-{'-'.join(sharded)}-{part_name(i, n)}", pure=False, retries=RETRIES,
                          resources={"GPU": 1} if gpu else None)
            for i in range(n)
        ]
        from distributed import wait

        wait(futures)
        failed = {f.key: f.exception() if f.status == "error" else f.status for f in futures if f.status != "finished"}
    finally:
        if own:
            client.close()
            if cluster is not None:
                cluster.close()
    if failed:
        lines = "\n".join(f"- {k}: {e}" for k, e in failed.items())
        raise RuntimeError(f"{len(failed)} of {n} shards failed after {RETRIES} retries; rerun each with "
                           f"`tj run --shard I/{n} {' '.join(sharded)}`:\n{lines}")
    for s in sharded:
        if on_event:
            on_event(s, "done", {"shards": n})
    return [(s, "ran") for s in sharded]


def run(
    cfg: PipelineConfig,
    stages: list[str] | None,
    scheduler: str,
    shards: int | None = None,
    *,
    force: bool = False,
    allow_partial: bool = False,
    on_event: Callable[[str, str, dict[str, Any]], None] | None = None,
) -> list[tuple[str, str]]:
    """`tj run --scheduler`: index here, the sharded stages on the cluster, then the rest here
    (train and eval refuse, as always, unless every shard is done)."""
    from thinkjepa.app import pipeline

    wanted = list(stages) if stages else list(pipeline.STAGE_NAMES)
    before = [s for s in wanted if pipeline.STAGE_NAMES.index(s) < pipeline.STAGE_NAMES.index("extract")]
    after = [s for s in wanted if s not in before and s not in SHARDED]
    done = pipeline.run(cfg, before, force=force, on_event=on_event) if before else []
    done += run_sharded(cfg, wanted, scheduler, shards, force=force, on_event=on_event)
    if after:
        done += pipeline.run(cfg, after, force=force, on_event=on_event, allow_partial=allow_partial)
    return done

"""Where ``tj demo``'s time goes: wall and CPU seconds of each step, in one process.

    python benchmarks/profile_demo.py [--workdir DIR] [--set key=value ...] [--json OUT]

Runs the demo exactly as ``tj demo`` does (``thinkjepa.app.demo``) on a fresh or existing
workdir and times: building the tiny checkpoints, synthesising the data, every pipeline stage,
inside extraction the vLLM engine start (``make_backend``), inside training every run
(variant x seed, with its steps/s from ``summary.json``), and inside evaluation the reading of
each run, the test-time ablations and the report with its plots. CPU seconds count this process
and its finished children (the vLLM engine processes), so on a shared machine they say what a
step costs where wall time also counts the waiting; a step's CPU/wall ratio above 1 is one that
kept both cores busy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from contextlib import contextmanager
from pathlib import Path


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Clock:
    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.t0, self.c0 = time.perf_counter(), _cpu()

    @contextmanager
    def step(self, name: str, depth: int = 0):
        t, c = time.perf_counter(), _cpu()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t, _cpu() - c, depth)

    def add(self, name: str, wall: float, cpu: float, depth: int = 0, **extra) -> None:
        self.rows.append({"step": name, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "depth": depth, **extra})
        print(f"{'  ' * depth}{name:<34} {wall:7.1f} s wall {cpu:7.1f} s cpu", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("runs/profile-demo"))
    ap.add_argument("--set", dest="sets", action="append", default=[], help="demo override key=value (repeatable)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args()
    os.environ.setdefault("THINKJEPA_PROGRESS", "0")

    from thinkjepa import logs
    from thinkjepa.app import demo, pipeline
    from thinkjepa.config import load_config
    from thinkjepa.extract import backends
    from thinkjepa.train import loop

    clock = Clock()
    workdir = args.workdir.resolve()
    logs.capture_third_party(workdir)
    preview = load_config(None, args.sets, base=demo.demo_defaults(), use_default_file=False)
    with clock.step("build tiny checkpoints"):
        qwen, vjepa = demo.prepare_models(workdir, preview)
    with clock.step("synthesise data"):
        root = demo.synthesize_demo_data(workdir / "data", preview)
    cfg = demo.demo_config(workdir, root, qwen, vjepa, args.sets)

    make_backend, run_training = backends.make_backend, loop.run_training

    def timed_backend(*a, **kw):
        with clock.step("vLLM engine start", depth=1):
            return make_backend(*a, **kw)

    def timed_training(cfg_, variant, **kw):
        t, c = time.perf_counter(), _cpu()
        run_dir = run_training(cfg_, variant, **kw)
        summary = json.loads((run_dir / "summary.json").read_text())
        clock.add(f"train {variant} seed {kw.get('seed')}", time.perf_counter() - t, _cpu() - c, 1,
                  steps=summary["steps"], steps_per_s=summary["steps_per_s"], best_val_ade=summary["best_val_ade"])
        return run_dir

    backends.make_backend, loop.run_training = timed_backend, timed_training
    starts: dict[str, tuple[float, float]] = {}
    last_eval = [time.perf_counter(), _cpu(), None]

    def eval_progress(what: str) -> None:
        t, c = time.perf_counter(), _cpu()
        if last_eval[2] is not None:
            clock.add(f"eval: {last_eval[2]}", t - last_eval[0], c - last_eval[1], 1)
        last_eval[:] = [t, c, what]

    def on_event(stage: str, event: str, info: dict) -> None:
        if event == "start":
            starts[stage] = (time.perf_counter(), _cpu())
            if stage == "eval":
                last_eval[:] = [time.perf_counter(), _cpu(), None]
        elif event == "done":
            t, c = starts.pop(stage)
            if stage == "eval" and last_eval[2] is not None:
                clock.add(f"eval: {last_eval[2]} .. report", time.perf_counter() - last_eval[0], _cpu() - last_eval[1], 1)
            clock.add(f"stage {stage}", time.perf_counter() - t, _cpu() - c)

    from thinkjepa import evaluate

    run_eval = evaluate.run_eval
    evaluate.run_eval = lambda c, progress=None: run_eval(c, progress=eval_progress)  # the eval stage's call
    pipeline.run(cfg, on_event=on_event)
    clock.add("total", time.perf_counter() - clock.t0, _cpu() - clock.c0)
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores")
    if args.json:
        args.json.write_text(json.dumps({"rows": clock.rows, "loadavg": load, "sets": args.sets}, indent=1))


if __name__ == "__main__":
    main()

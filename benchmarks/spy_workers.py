"""Where vLLM's worker processes spend their samples: two engines side by side, from py-spy.

vLLM runs each engine's model in a worker process, which ``cProfile`` in the client cannot see
(and two engines cannot share one process: the KV connector is process-global). py-spy samples
every process instead:

    py-spy record --subprocesses --nonblocking --rate 100 --format raw -o capture.raw -- \\
        python benchmarks/bench_capture.py --clips 24 --clips-per-call 6
    python benchmarks/spy_workers.py capture.raw

Prints, for the worker processes (those running ``WorkerProc.worker_busy_loop``), the samples
spent inside engine steps, and the functions whose inclusive samples differ most between the
first and the last worker (bench_capture builds the plain engine first, then the capture one),
with the client process's samples in the project's own capture code.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

WORKER_LOOP = "WorkerProc.worker_busy_loop"
STEP_MARKERS = ("GPUModelRunner.execute_model", "GPUModelRunner.sample_tokens", "take_draft_token_ids")
CLIENT_MARKERS = ("CacheWriter.commit", "VLLMThinker._collect", "load_hidden_states", "layer_major_f32",
                  "VLLMThinker.extract", "PlainEngine.run")
_PROCESS = re.compile(r"process (\d+)")
_LINE = re.compile(r":\d+\)")


@dataclass
class Process:
    pid: int
    steps: int = 0
    worker: bool = False
    inclusive: Counter = field(default_factory=Counter)
    anywhere: Counter = field(default_factory=Counter)


def parse(lines) -> dict[int, Process]:
    """py-spy ``--format raw`` lines (``frame;frame;... count``; with ``--subprocesses`` each
    stack starts with its process chain) -> per-process sample counts, frames without line numbers."""
    procs: dict[int, Process] = {}
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        heads = [i for i, f in enumerate(frames) if f.startswith("process ")]
        if not heads:
            continue
        m = _PROCESS.match(frames[heads[-1]])
        if m is None:
            continue
        p = procs.setdefault(int(m.group(1)), Process(int(m.group(1))))
        own = [_LINE.sub(")", f) for f in frames[heads[-1] + 1:]]
        p.worker = p.worker or any(WORKER_LOOP in f for f in own)
        joined = ";".join(own)
        for marker in CLIENT_MARKERS:
            if marker in joined:
                p.anywhere[marker] += n
        if any(marker in f for f in own for marker in STEP_MARKERS):
            p.steps += n
            for f in set(own):
                p.inclusive[f] += n
    return procs


def report(procs: dict[int, Process], top: int = 30) -> str:
    workers = sorted((p for p in procs.values() if p.worker), key=lambda p: p.pid)
    if len(workers) < 2:
        return f"need two worker processes to compare, found {len(workers)}"
    a, b = workers[0], workers[-1]
    out = [f"worker {a.pid} (first built, the plain engine): {a.steps} samples in engine steps",
           f"worker {b.pid} (last built, the capture engine): {b.steps} samples in engine steps "
           f"({b.steps / max(a.steps, 1):.2f}x)",
           f"largest differences in inclusive samples ({b.pid} - {a.pid}), share of the {b.steps - a.steps} extra:"]
    extra = max(b.steps - a.steps, 1)
    names = set(a.inclusive) | set(b.inclusive)
    rows = sorted(names, key=lambda k: -(b.inclusive[k] - a.inclusive[k]))
    shown = 0
    for k in rows:
        d = b.inclusive[k] - a.inclusive[k]
        if d <= 0 or shown >= top:
            break
        if a.inclusive[k] >= 0.9 * a.steps or "spawn_main" in k:
            continue  # the frames every step runs under (process, loop, rpc, no_grad, forward wrappers)
        out.append(f"  {d:+6d} ({100 * d / extra:4.0f}%)  {a.inclusive[k]:6d} -> {b.inclusive[k]:6d}  {k}")
        shown += 1
    for p in sorted(procs.values(), key=lambda p: p.pid):
        if p.anywhere:
            out.append(f"process {p.pid}: " + ", ".join(f"{k} {v}" for k, v in p.anywhere.most_common()))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("raw", type=Path, help="py-spy record --format raw output")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    with args.raw.open() as f:
        print(report(parse(f), args.top))


if __name__ == "__main__":
    main()

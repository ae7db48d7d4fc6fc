"""The local sweep backend's process pool against one process, on a small grid of real runs.

Each variant runs the same grid end to end (worker start-up included) with the run store off:
  one process, 1 thread     the in-process runner, pinned like every sweep run (same numbers as the pool)
  one process, all threads  the in-process runner with torch's threads at the core count (the best
                            one process can do; its numbers may differ in the last bits)
  process pool              one worker per core, 1 thread each (the default `sweep`)
Prints the wall time of each, the pool's speed-up over both, and whether the pool reproduced the
one-thread numbers bit for bit. The load average is printed too: on a shared machine it decides
the ratio.

    python bench/bench_sweep.py [--dataset mnist5k] [--classes 0,1,2,3] [--sparsity 0.3,0.5] [--seeds 0]
"""

import argparse
import os
import time


def timed(grid, backend, threads: int):
    from core import sweep as sweeps
    from core.sweep import Sweep

    sweeps._EXPERIMENTS.clear()  # every variant loads its data and computes its gradients itself
    sweep = Sweep(grid, backend, threads_per_run=threads)
    start = time.perf_counter()
    outcomes = list(sweep.run())
    seconds = time.perf_counter() - start
    failed = [o.error for o in outcomes if o.error]
    if failed:
        raise SystemExit(f"runs failed: {failed}")
    numbers = {(o.config.forget, o.config.method, o.sparsity, o.config.seed):
               {k: v for k, v in o.result.metrics.items() if k != "rte_seconds"} for o in outcomes}
    return seconds, numbers


def main() -> None:
    from core.sweep import Grid, LocalBackend, class_targets, parse_list

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--classes", default="0,1,2,3")
    parser.add_argument("--method", default="salun")
    parser.add_argument("--sparsity", default="0.3,0.5")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    grid = Grid(dataset=args.dataset, forgets=class_targets(args.classes, args.dataset),
                methods=parse_list(args.method, "--method", str), sparsities=parse_list(args.sparsity, "--sparsity", float),
                seeds=parse_list(args.seeds, "--seeds", int), epochs=args.epochs)
    runs = len(grid.points())
    print(f"grid: {runs} runs ({args.method} on {args.dataset} classes {args.classes}, sparsities {args.sparsity}, "
          f"seeds {args.seeds}); {cores} cores; load average before: {os.getloadavg()[0]:.1f}", flush=True)
    one, one_numbers = timed(grid, LocalBackend(workers=1), threads=1)
    print(f"one process, 1 thread:        {one:7.1f} s", flush=True)
    full, _ = timed(grid, LocalBackend(workers=1), threads=cores)
    print(f"one process, {cores} threads:       {full:7.1f} s", flush=True)
    pool, pool_numbers = timed(grid, LocalBackend(workers=cores), threads=1)
    print(f"process pool, {cores} x 1 thread:  {pool:7.1f} s", flush=True)
    print(f"speed-up of the pool: {one / pool:.2f}x over one process with 1 thread, "
          f"{full / pool:.2f}x over one process with {cores} threads")
    print(f"pool numbers identical to the in-process runner's: {pool_numbers == one_numbers}")
    print(f"load average after: {os.getloadavg()[0]:.1f} (other jobs on this machine slow every variant)")


if __name__ == "__main__":
    main()

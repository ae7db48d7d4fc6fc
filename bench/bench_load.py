"""Load test: 4 visitors each run the default class forgetting at once, against each alone.

The app's way: one cached original shared read-only, runs through the bounded job runner (default
limit: 1 at a time on a 2-core machine; pass --concurrent 2 to compare). Checks that every concurrent
result equals the single-session result for the same seed, and that the original is unchanged.

    python bench/bench_load.py [--sessions 4] [--concurrent 1]
"""

import argparse
import time

from core.checkpoint import state_checksum
from core.classification.experiment import Experiment, RunConfig
from core.jobs import DONE, JobRunner


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--concurrent", type=int, default=1)
    parser.add_argument("--forget", default="class:3")
    args = parser.parse_args()
    experiment = Experiment.from_config(RunConfig(forget=args.forget))
    checksum = state_checksum(experiment.original)
    runner = JobRunner(max_concurrent=args.concurrent)
    seeds = list(range(args.sessions))

    def session(seed):
        return lambda progress: experiment.unlearn("salun", seed=seed, progress=progress)

    alone, alone_wall = {}, {}
    for seed in seeds:
        start = time.perf_counter()
        job = runner.submit(session(seed), label=f"alone {seed}")
        job.wait()
        alone_wall[seed] = time.perf_counter() - start
        alone[seed] = job.result

    start = time.perf_counter()
    jobs = {seed: runner.submit(session(seed), label=f"visitor {seed}") for seed in seeds}
    positions = {seed: job.queue_position() for seed, job in jobs.items()}
    for job in jobs.values():
        job.wait()
    total = time.perf_counter() - start

    strip = lambda m: {k: v for k, v in m.items() if k != "rte_seconds"}  # noqa: E731
    same = all(jobs[s].status == DONE and strip(jobs[s].result.metrics) == strip(alone[s].metrics)
               and jobs[s].result.losses == alone[s].losses for s in seeds)
    latency = {s: jobs[s].finished_at - jobs[s].submitted_at for s in seeds}
    print(f"{args.sessions} sessions, SalUn {args.forget} on the shipped model, job runner: {args.concurrent} at once, "
          f"{runner.threads_per_job} torch threads per job")
    print(f"alone: mean {sum(alone_wall.values()) / len(seeds):.1f} s per session "
          f"(sum {sum(alone_wall.values()):.1f} s)")
    print(f"together: all {args.sessions} done in {total:.1f} s = {total / sum(alone_wall.values()):.2f} x the sum "
          f"of the alone runs; per-visitor wait {min(latency.values()):.1f}-{max(latency.values()):.1f} s; "
          f"queue positions at submit {sorted(positions.values())}")
    print(f"all finished: {all(j.status == DONE for j in jobs.values())}; every result equals its single-session "
          f"result (metrics and per-step losses): {same}; original unchanged: {state_checksum(experiment.original) == checksum}")


if __name__ == "__main__":
    main()

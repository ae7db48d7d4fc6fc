"""Several visitors at once: concurrent runs share the cached original read-only and never cross."""

import pytest

from core.checkpoint import state_checksum
from core.classification.experiment import Experiment, RunConfig
from core.jobs import DONE, JobRunner


def strip(metrics):
    return {k: v for k, v in metrics.items() if k != "rte_seconds"}


def test_four_concurrent_sessions_match_their_single_session_results(digits_checkpoint):
    # one cached original per forget target, as the app shares them between visitors
    experiments = {k: Experiment.from_config(RunConfig(dataset="digits", forget=f"class:{k}",
                                                       checkpoint=str(digits_checkpoint)), device="cpu")
                   for k in (1, 2, 3, 4)}
    checksums = {k: state_checksum(e.original) for k, e in experiments.items()}
    runner = JobRunner(max_concurrent=2, threads_per_job=1)
    methods = {1: "salun", 2: "retrain", 3: "salun", 4: "ga"}
    budget = {"salun": {"epochs": 2}, "retrain": {"epochs": 2}, "ga": {"epochs": 1}}

    def session(k):
        return lambda progress: experiments[k].unlearn(methods[k], seed=k, progress=progress, **budget[methods[k]])

    alone = {}
    for k in experiments:
        job = runner.submit(session(k), label=f"alone {k}")
        job.wait()
        alone[k] = job.result
    jobs = {k: runner.submit(session(k), label=f"visitor {k}") for k in experiments}
    assert sum(j.queue_position() > 0 for j in jobs.values()) >= 1  # bounded: some waited their turn
    for k, job in jobs.items():
        assert job.wait(300) and job.status == DONE, job.message
        assert strip(job.result.metrics) == strip(alone[k].metrics)
        assert job.result.losses == alone[k].losses
        assert job.result.config.forget == f"class:{k}" and job.result.method == methods[k]
        assert state_checksum(experiments[k].original) == checksums[k]
        assert job.result.model is not experiments[k].original


@pytest.mark.parametrize("seed", [0, 5])
def test_same_config_and_seed_give_identical_metrics_and_weights(digits_checkpoint, seed):
    config = RunConfig(dataset="digits", forget="random:0.1", method="salun", seed=seed, epochs=2,
                       checkpoint=str(digits_checkpoint))
    from core.classification.experiment import run

    a, b = run(config), run(config)
    assert strip(a.metrics) == strip(b.metrics)
    assert state_checksum(a.model) == state_checksum(b.model)

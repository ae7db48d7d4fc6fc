"""SalUn's default class-wise forgetting of every class of the shipped model (seed 0), against the
original model's own retain and test accuracy (Retrain's are within a few tenths of those; the full
SalUn-vs-Retrain comparison is bench_classification.py --all-classes, ~10 retrains).

    python bench/bench_classwise_all.py
"""


import torch

from core.classification.experiment import Experiment, RunConfig

torch.set_num_threads(1)
for k in range(10):
    exp = Experiment.from_config(RunConfig(forget=f"class:{k}"))
    o = exp.original_metrics()
    m = exp.unlearn("salun", seed=0).metrics
    print(f"class {k}: UA {m['ua']:.2f} RA {m['ra']:.2f} (orig {o['ra']:.2f}) TA {m['ta']:.2f} (orig {o['ta']:.2f}) "
          f"forget-test {m['forget_test_accuracy']:.1f} rte {m['rte_seconds']:.1f}", flush=True)

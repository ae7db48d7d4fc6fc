"""Tuning aid for the generation-forgetting defaults: UA along the run, retained accuracy at the end.

    .venv/bin/python scripts/tune_generation.py GENERATOR CLASS '{"steps":60,"lr":1e-3,"alpha":0.5}' [...]
"""
import json
import sys
import time

import torch

from core.checkpoint import load_checkpoint
from core.data import load_dataset
from core.diffusion.model import class_grid_labels, generate, load_generator
from core.classification.training import per_class_accuracy
from core.diffusion.methods import generation_split, unlearn_generator

torch.set_num_threads(int(__import__("os").environ.get("THREADS", "1")))
gen, meta = load_generator(sys.argv[1])
clf, _ = load_checkpoint()
k = int(sys.argv[2])
guidance = float(__import__("os").environ.get("GUIDANCE", "2.0"))
ds = load_dataset("mnist5k")
data = generation_split(ds, k)
labels = class_grid_labels(10, 10)
base = per_class_accuracy(clf, generate(gen, labels, guidance=guidance, steps=15, seed=1), labels, 10)
print("before", [round(a) for a in base], "retained", round(sum(a for i, a in enumerate(base) if i != k) / 9, 1), flush=True)
for spec in sys.argv[3:]:
    params = json.loads(spec)
    every = max(1, params.get("steps", 60) // 4)

    def watch(model, done, total, loss):
        if done % every == 0:
            imgs = generate(model, [k] * 20, guidance=guidance, steps=10, seed=2)
            acc = per_class_accuracy(clf, imgs, torch.full((20,), k), 10)[k]
            print(f"  step {done} loss {loss:.4f} UA {100 - acc:.0f}", flush=True)

    t = time.perf_counter()
    run = unlearn_generator(gen, data, "salun", seed=0, mask_guidance=guidance, watch=watch, **params)
    after = per_class_accuracy(clf, generate(run.model, labels, guidance=guidance, steps=15, seed=1), labels, 10)
    print(spec, f"rte {run.rte_seconds:.0f}s {run.timings}", "UA", round(100 - after[k]), "retained",
          round(sum(a for i, a in enumerate(after) if i != k) / 9, 1), [round(a) for a in after], flush=True)

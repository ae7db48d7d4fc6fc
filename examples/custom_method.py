"""NegGrad+, an unlearning method SalUn Lab does not ship, added from outside core/ in this one file.

    salun unlearn --plugin examples/custom_method.py --method neggrad_plus --forget class:3 --json
    salun unlearn --plugin examples/custom_method.py --method neggrad_plus --beta 0.95 --masked
    SALUN_PLUGINS=examples/custom_method.py streamlit run app.py        (it appears among the methods)

NegGrad+ (Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023) fine-tunes on the
retain set while ascending the loss on the forget set, in one objective weighted by beta:

    loss = beta * CE(retain batch) - (1 - beta) * CE(forget batch)

Plain gradient ascent (GA) only pushes the forget set away and drags the kept classes along; the retain
term holds them in place. Measured on the shipped mnist5k model, forgetting class 3 with the defaults
below (seed 0): UA 55.3, RA 99.7, TA 98.2, forgotten class's test accuracy 55.0 (SalUn: UA 100 with RA
and TA within a point). At lr 1e-3, beta 0.9 it forgot nothing (UA 0.5); at lr 1e-2 the ascent diverged
(NaN), which the run reports as one line. It is here as a worked example of a plugin, not tuned further.

A plugin is ordinary Python: write the run function with the common signature,
declare its settings as typed Params, and register it. The CLI flags (--beta ...), their validation and
the app's widgets all come from the declaration.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from core.classification.training import batches
from core.methods import Method, Param, register
from core.saliency import MaskConstraint
from core.steps import MaskedSteps, make_generator


def run_neggrad_plus(model, data, params, mask=None, progress=None) -> list[float]:
    """One epoch is one pass over the forget set; each forget batch is paired with a random retain batch.

    `model` is a private copy to change in place, `data` a core.classification.methods.UnlearnData,
    `params` the declared settings below (already checked) plus `seed`, and `mask`, if given, the
    saliency mask that MaskedSteps enforces. Returns the loss of every step.
    """
    device = next(model.parameters()).device
    generator = make_generator(params["seed"])  # a private random stream: same seed, same run
    optimizer = torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=params["momentum"],
                                weight_decay=params["weight_decay"])
    constraint = MaskConstraint(model, mask) if mask is not None else None
    n_forget, n_retain, batch = len(data.forget_y), len(data.retain_y), params["batch_size"]
    step = MaskedSteps(model, optimizer, constraint, params["epochs"] * math.ceil(n_forget / batch), progress,
                       "NegGrad+")
    loss_fn = nn.CrossEntropyLoss()
    beta = params["beta"]
    model.train()
    for _ in range(params["epochs"]):
        for idx in batches(n_forget, batch, generator):
            r = torch.randint(0, n_retain, (params["retain_batch_size"],), generator=generator)
            forget_loss = loss_fn(model(data.forget_x[idx].to(device)), data.forget_y[idx].to(device))
            retain_loss = loss_fn(model(data.retain_x[r].to(device)), data.retain_y[r].to(device))
            step(beta * retain_loss - (1 - beta) * forget_loss)
    model.eval()
    return step.losses


register(Method(
    name="neggrad_plus",
    label="NegGrad+",
    summary="Gradient ascent on the forget set combined with descent on the retain set, weighted by beta.",
    family="classification",
    run=run_neggrad_plus,
    mask="optional",  # like the other baselines: --masked confines it to the saliency mask
    params=(
        Param("epochs", int, 3, low=0, low_open=True, high=1000, label="Epochs", primary=True,
              meaning="passes over the forget set"),
        Param("lr", float, 3e-3, low=0, low_open=True, label="Learning rate", primary=True, step=1e-4,
              meaning="SGD step size; the ascent is unbounded, so a large one makes the loss diverge"),
        Param("beta", float, 0.7, low=0, high=1, label="β", primary=True, step=0.05,
              meaning="weight of the retain loss; 1 - β weighs the ascent on the forget set"),
        Param("retain_batch_size", int, 128, low=0, low_open=True, high=100_000, label="Retain batch size",
              meaning="retain images paired with every forget batch"),
        Param("batch_size", int, 64, low=0, low_open=True, high=100_000, label="Batch size",
              meaning="forget images per step"),
        Param("momentum", float, 0.9, low=0, high=1, label="Momentum", step=0.05, meaning="SGD momentum"),
        Param("weight_decay", float, 5e-4, low=0, high=1, label="Weight decay", step=1e-4,
              meaning="SGD weight decay"),
    ),
    # defaults that depend on the data are declared here too, keyed (dataset or "*", forget kind or "*"):
    overrides={("*", "random"): {"beta": 0.95}, ("*", "indices"): {"beta": 0.95}},
))

"""What the saliency mask measurably does here: the ablation and baseline-tuning results, read back.

bench/bench_mask_ablation.py runs SalUn and RL with the identical recipe (the mask the only
difference) over forget targets, learning rates, sparsities and seeds, and writes
bench/results/mask_ablation_summary.json; bench/bench_baselines_tune.py writes the tuned baselines'
confirmation runs. This module reads those files and turns them into tables, figures and sentences
computed from the numbers, so the app's "Why the mask?" page says what was measured and nothing more.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
ABLATION_SUMMARY = RESULTS / "mask_ablation_summary.json"
DEFAULT_LR = 1e-3  # SalUn's and RL's default learning rate for every forget kind on mnist5k
# The baselines' defaults before bench/bench_baselines_tune.py tuned them (ℓ1-sparse's old α is off its grid).
OLD_DEFAULTS = {"ga": {"lr": 1e-3, "epochs": 3}, "ft": {"lr": 0.02, "epochs": 2}, "ssd": {"alpha": 10, "dampening": 1.0}}
METHOD_LABELS = {"salun": "SalUn", "rl": "RL", "ga": "GA", "ft": "FT", "l1_sparse": "ℓ1-sparse", "ssd": "SSD"}
# Differences smaller than the spread over seeds are not findings; this many standard deviations apart is.
CLEAR = 2.0


def target_label(forget: str) -> str:
    """A forget target in words: "class:4" -> "digit 4", "random:0.1" -> "a random 10%"."""
    kind, _, value = forget.partition(":")
    if kind == "class":
        return f"digit {value}"
    if kind == "random":
        try:
            return f"a random {float(value) * 100:g}%"
        except ValueError:
            pass
    return forget


def load_ablation(path: Path | None = None) -> dict | None:
    """The ablation summary, or None when the benchmark has not been run."""
    path = path or ABLATION_SUMMARY
    return json.loads(path.read_text()) if path.is_file() else None


def pairs(summary: dict, forget: str) -> list[dict]:
    """SalUn against RL at every learning rate of the lr stage for one forget target."""
    rows = [r for r in summary["rows"] if r["stage"] == "lr" and r["forget"] == forget]
    out = []
    for lr in sorted({r["lr"] for r in rows}):
        s = next((r for r in rows if r["lr"] == lr and r["method"] == "salun"), None)
        q = next((r for r in rows if r["lr"] == lr and r["method"] == "rl"), None)
        if s and q:
            out.append({"lr": lr, "salun": s, "rl": q})
    return out


def verdict(pair: dict, key: str = "avg_gap") -> str:
    """'SalUn', 'RL' or 'neither': which is closer to Retrain by more than CLEAR spreads (Avg. Gap), or
    which keeps more retained accuracy (RA)."""
    s, q = pair["salun"], pair["rl"]
    noise = CLEAR * max(s[key + "_std"], q[key + "_std"], 0.05)
    better_low = key == "avg_gap"
    diff = (q[key] - s[key]) if better_low else (s[key] - q[key])
    if diff > noise:
        return "SalUn"
    if diff < -noise:
        return "RL"
    return "neither"


def reading(summary: dict, forget: str) -> list[str]:
    """Plain sentences about one target, computed from the numbers."""
    out = []
    for p in pairs(summary, forget):
        s, q = p["salun"], p["rl"]
        who = verdict(p)
        head = (f"lr {p['lr']:g}: SalUn Avg. Gap {s['avg_gap']:.2f} ± {s['avg_gap_std']:.2f}, "
                f"RL {q['avg_gap']:.2f} ± {q['avg_gap_std']:.2f} (retained accuracy {s['ra']:.1f}% vs {q['ra']:.1f}%)")
        tail = {"neither": " — no difference beyond the spread over seeds.",
                "SalUn": " — the mask helps: SalUn is clearly closer to Retrain.",
                "RL": " — the mask hurts: RL is clearly closer to Retrain."}[who]
        out.append(head + tail)
    return out


def tally(summary: dict) -> dict[str, int]:
    """How many (target, learning rate) cells each side wins by more than the spread."""
    counts = {"SalUn": 0, "RL": 0, "neither": 0}
    for forget in summary.get("targets", []):
        for p in pairs(summary, forget):
            counts[verdict(p)] += 1
    return counts


def stability_figure(summary: dict, forget: str) -> go.Figure:
    """Avg. Gap to Retrain and retained accuracy over learning rates, SalUn against RL, ± std over seeds."""
    ps = pairs(summary, forget)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Avg. Gap to Retrain (lower is better)",
                                                       "Retained accuracy RA (%)"))
    for method, color, dash in (("salun", "#d62728", "solid"), ("rl", "#ff7f0e", "dot")):
        lrs = [p["lr"] for p in ps]
        for col, key in ((1, "avg_gap"), (2, "ra")):
            fig.add_trace(go.Scatter(
                x=lrs, y=[p[method][key] for p in ps],
                error_y=dict(type="data", array=[p[method][key + "_std"] for p in ps], visible=True),
                mode="lines+markers", name=METHOD_LABELS[method], legendgroup=method, showlegend=col == 1,
                line=dict(color=color, dash=dash)), row=1, col=col)
    fig.update_xaxes(type="log", title_text="learning rate")
    fig.update_layout(title=dict(text=f"SalUn vs RL, forget {target_label(forget)}: same recipe, the mask the only difference",
                                 x=0, font=dict(size=15)), height=340, margin=dict(l=10, r=10, t=70, b=10))
    return fig


def sparsity_rows(summary: dict, forget: str, lr: float) -> list[dict]:
    """SalUn at each mask sparsity (1.0 = RL) at one learning rate."""
    rows = [r for r in summary["rows"] if r["forget"] == forget and r["lr"] == lr
            and (r["method"] == "rl" or r["stage"] in ("sparsity", "lr"))]
    return sorted(rows, key=lambda r: r["sparsity"])


def sparsity_reading(summary: dict, forget: str) -> list[str]:
    """One sentence per learning rate: what SalUn does with each mask size, RL (100%) last."""
    out = []
    lrs = sorted({r["lr"] for r in summary["rows"] if r["stage"] == "sparsity" and r["forget"] == forget})
    for lr in lrs:
        parts = [f"{r['sparsity'] * 100:g}% free: UA {r['ua']:.1f}, RA {r['ra']:.1f}, Avg. Gap {r['avg_gap']:.2f}"
                 for r in sparsity_rows(summary, forget, lr)]
        out.append(f"lr {lr:g} — " + "; ".join(parts) + ".")
    return out


def sparsity_figure(summary: dict, forget: str) -> go.Figure:
    fig = go.Figure()
    lrs = sorted({r["lr"] for r in summary["rows"] if r["stage"] == "sparsity" and r["forget"] == forget})
    for lr, color in zip(lrs, ("#d62728", "#1f77b4", "#2ca02c")):
        rows = sparsity_rows(summary, forget, lr)
        fig.add_trace(go.Scatter(x=[r["sparsity"] * 100 for r in rows], y=[r["avg_gap"] for r in rows],
                                 error_y=dict(type="data", array=[r["avg_gap_std"] for r in rows], visible=True),
                                 mode="lines+markers", name=f"lr {lr:g}", line=dict(color=color)))
    fig.update_xaxes(title_text="weights free to move (%) — 100 is RL")
    fig.update_yaxes(title_text="Avg. Gap to Retrain")
    fig.update_layout(title=dict(text=f"Mask size, forget {target_label(forget)}", x=0, font=dict(size=15)), height=320,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def layer_shares(summary: dict, forget: str, sparsity: str = "0.05") -> list[dict]:
    """Which layers the mask picks: each layer's share of the mask and the fraction of the layer chosen."""
    rec = next((r for r in summary.get("layers", []) if r["forget"] == forget), None)
    if rec is None:
        return []
    return [{"layer": name, "weights": v["numel"], "share of the mask (%)": 100 * v["share_of_mask"],
             "fraction of the layer selected (%)": 100 * v["layer_fraction"]}
            for name, v in rec["layers"][sparsity].items()]


def _read(path: Path) -> list:
    return json.loads(path.read_text()) if path.is_file() else []


def _setting(point: dict) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in point.items())


def baseline_table(results: Path | None = None) -> list[dict]:
    """Mean ± std over seeds per forget target: Retrain, SalUn and RL at their defaults (the ablation's
    runs at lr 1e-3), each baseline at its tuned setting, and each baseline's old default (the grid's
    seed-0 run at that point, where the grid has it)."""
    results = results or RESULTS
    confirm = _read(results / "baselines_tune_confirm.json")
    refs = _read(results / "retrain_refs.json")
    ablation = _read(results / "mask_ablation.json")
    grid = _read(results / "baselines_tune_grid.json")
    out = []
    for forget in sorted({r["forget"] for r in confirm}):
        seeds = sorted({r["seed"] for r in confirm if r["forget"] == forget})
        ref = [r["metrics"] for r in refs if r["forget"] == forget and r["seed"] in seeds]
        if ref:
            out.append(_row(forget, "Retrain", "the original's recipe", ref, [0.0] * len(ref)))
        original = [r for r in _read(results / "original_refs.json") if r["forget"] == forget]
        if original:
            out.append(_row(forget, "Original (no unlearning)", "—", [original[0]["metrics"]], [original[0]["avg_gap"]]))
        for method in ("salun", "rl"):
            rows = [r for r in ablation if r["stage"] == "lr" and r["forget"] == forget and r["method"] == method
                    and r["lr"] == DEFAULT_LR and r["seed"] in seeds]
            if rows:
                out.append(_row(forget, METHOD_LABELS[method], "lr 0.001, the ablation's recipe", [r["metrics"] for r in rows],
                                [r["avg_gap"] for r in rows]))
        for method in ("ga", "ft", "l1_sparse", "ssd"):
            rows = [r for r in confirm if r["forget"] == forget and r["method"] == method]
            ok = [r for r in rows if "metrics" in r]
            if ok:
                row = _row(forget, METHOD_LABELS[method] + " (tuned)", _setting(ok[0]["point"]),
                           [r["metrics"] for r in ok], [r["avg_gap"] for r in ok])
                if len(rows) > len(ok):
                    row["diverged"] = len(rows) - len(ok)
                out.append(row)
            old = next((r for r in grid if r["forget"] == forget and r["method"] == method
                        and r["point"] == OLD_DEFAULTS.get(method) and "metrics" in r), None)
            if old:
                out.append(_row(forget, METHOD_LABELS[method] + " (old default, seed 0)", _setting(old["point"]),
                                [old["metrics"]], [old["avg_gap"]]))
    return out


def ordering(rows: list[dict], forget: str) -> list[str]:
    """Methods (SalUn, RL, tuned baselines) from closest to Retrain to furthest, by mean Avg. Gap."""
    chosen = [r for r in rows if r["forget"] == forget and r["method"] not in ("Retrain", "Original (no unlearning)")
              and "old default" not in r["method"]]
    return [r["method"].replace(" (tuned)", "") for r in sorted(chosen, key=lambda r: r["Avg. Gap"])]


def _row(forget: str, label: str, setting: str, metrics: list[dict], gaps: list[float]) -> dict:
    row = {"forget": forget, "method": label, "setting": setting, "seeds": len(metrics)}
    for key, name in (("ua", "UA"), ("ra", "RA"), ("ta", "TA"), ("mia_efficacy", "MIA-Efficacy")):
        row[name] = statistics.mean(m[key] for m in metrics)
    row["Avg. Gap"] = statistics.mean(gaps)
    row["Avg. Gap ±"] = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
    row["RTE (s)"] = statistics.mean(m["rte_seconds"] for m in metrics)
    return row


# --- generation: bench/bench_generation_ablation.py ------------------------------------------------

GENERATION_SUMMARY = RESULTS / "generation_ablation.json"
GENERATION_LABELS = {"ua": "UA (%)", "retained_accuracy": "retained-class accuracy (%)",
                     "drop": "retained accuracy lost (points, lower is better)",
                     "frechet_retained": "Fréchet distance, retained classes (lower is better)"}


def load_generation_ablation(path: Path | None = None) -> dict | None:
    """The generation ablation's summary, or None when that benchmark has not been run."""
    path = path or GENERATION_SUMMARY
    return json.loads(path.read_text()) if path.is_file() else None


def _values(summary: dict, k: int, key: str, method: str) -> list[float]:
    return next(r[method] for r in summary["rows"] if r["class"] == k and r["metric"] == key)


def generation_figure(summary: dict) -> go.Figure:
    """Per forgotten class: retained accuracy lost and Fréchet distance, SalUn against RL, ± std over seeds."""
    keys = ("drop", "frechet_retained")
    fig = make_subplots(rows=1, cols=2, subplot_titles=[GENERATION_LABELS[k] for k in keys])
    classes = [f"class {k}" for k in summary["classes"]]
    for method, color in (("salun", "#d62728"), ("rl", "#ff7f0e")):
        for col, key in enumerate(keys, start=1):
            values = [_values(summary, k, key, method) for k in summary["classes"]]
            fig.add_trace(go.Bar(
                x=classes, y=[statistics.mean(v) for v in values], name=METHOD_LABELS[method], marker_color=color,
                error_y=dict(type="data", array=[statistics.stdev(v) if len(v) > 1 else 0 for v in values]),
                legendgroup=method, showlegend=col == 1), row=1, col=col)
    fig.update_layout(barmode="group", height=340, margin=dict(l=10, r=10, t=70, b=10),
                      title=dict(text="Generator: SalUn vs RL, same recipe, the mask the only difference",
                                 x=0, font=dict(size=15)))
    return fig


def generation_reading(summary: dict) -> list[str]:
    """Plain sentences from the paired differences (RL - SalUn over every class and seed)."""
    out = []
    paired = summary["paired"]
    n = len(paired["drop"])
    for key, better, what in (("drop", "lower", "retained accuracy lost"),
                              ("frechet_retained", "lower", "Fréchet distance of the retained classes' images"),
                              ("ua", "higher", "UA")):
        d = paired[key]
        mean = statistics.mean(d)
        std = statistics.stdev(d) if n > 1 else 0.0
        wins = sum(1 for x in d if (x > 0 if better == "lower" else x < 0))
        clear = abs(mean) > CLEAR * std / max(n, 1) ** 0.5  # the mean difference against its standard error
        if not clear:
            verdict_text = "no difference beyond the spread"
        elif (mean > 0) == (better == "lower"):
            verdict_text = "SalUn better"
        else:
            verdict_text = "RL better"
        out.append(f"{what}: RL − SalUn {mean:+.1f} ± {std:.1f} over {n} runs (SalUn better in {wins} of {n}) — "
                   f"{verdict_text}.")
    return out

"""Why the mask? What the saliency mask measurably changes on the shipped digit model, and what it does not.

Shows the saved results of bench/bench_mask_ablation.py (SalUn against RL, same recipe, the mask the
only difference) and bench/bench_baselines_tune.py (baselines tuned to be at their best). Nothing is
computed here: the page reads the benchmark files, so it opens instantly and says only what was measured.

Runs inside the app's navigation or on its own: `streamlit run pages/why.py`.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.classification import why_mask
from pages import ui

INTRO = """
SalUn's claim: restricting unlearning to the **salient** weights (the mask) makes it more precise and more
stable than the same random-label training with **every** weight free — a method called **RL**.
Here the two are run with the identical recipe — same random labels, same retain batches, same optimizer,
same seeds — so the mask is the only difference. Each number is a mean ± standard deviation over seeds,
measured against **Retrain** (a model trained from scratch without the forgotten images, the gold standard).
"""


def main() -> None:
    ui.ensure_navigation(__file__)
    st.title("Why the mask?")
    st.markdown(INTRO)
    summary = why_mask.load_ablation()
    if summary is None:
        st.info("No ablation results yet: run `python bench/bench_mask_ablation.py lr sparsity layers report`.")
        return

    counts = why_mask.tally(summary)
    cells = sum(counts.values())
    st.subheader("The short answer")
    st.markdown(
        f"On the shipped digit model (5,000 MNIST images, small CNN), across {len(summary['targets'])} forget "
        f"targets and {len(summary['lrs'])} learning rates ({cells} comparisons): the mask made SalUn clearly "
        f"closer to Retrain in **{counts['SalUn']}**, clearly further in **{counts['RL']}**, and made no "
        f"difference beyond the spread over seeds in **{counts['neither']}**. "
        + _lesson(counts))
    generation = why_mask.load_generation_ablation()
    if generation is not None and "SalUn better" in why_mask.generation_reading(generation)[0]:
        st.markdown("**On the image generator the mask does help:** with it, the digits the generator keeps lose "
                    "less of their recognition than with RL — see *And on the image generator?* below.")

    forget = st.selectbox("Forget target", summary["targets"], key="why_target",
                          format_func=why_mask.target_label)
    st.plotly_chart(why_mask.stability_figure(summary, forget), key="why_stability")
    for sentence in why_mask.reading(summary, forget):
        st.markdown(f"- {sentence}")
    rows = why_mask.pairs(summary, forget)
    if rows and "rl_change_inside_mask_50" in rows[0]["rl"]:
        shares = ", ".join(f"{100 * p['rl']['rl_change_inside_mask_50']:.0f}% at lr {p['lr']:g}" for p in rows)
        agree = ", ".join(f"{p['rl']['test_agreement']:.1f}% at lr {p['lr']:g}" for p in rows)
        st.markdown(
            f"**Where RL moves the weights.** Left free, RL puts this share of its (squared) weight change inside "
            f"SalUn's 50% mask: {shares}. The two models give the same answer on this share of test images: {agree}."
            + (" RL already changes mostly the salient weights, so fencing off the rest changes little."
               if min(p["rl"]["rl_change_inside_mask_50"] for p in rows) >= 0.8 else ""))

    st.subheader("How big must the mask be?")
    sparsity_target = forget if forget in _sparsity_targets(summary) else _sparsity_targets(summary)[0]
    st.plotly_chart(why_mask.sparsity_figure(summary, sparsity_target), key="why_sparsity")
    for sentence in why_mask.sparsity_reading(summary, sparsity_target):
        st.markdown(f"- {sentence}")
    layers = why_mask.layer_shares(summary, forget)
    if layers:
        st.markdown("**Where a 5% mask lands** (share of the selected weights in each layer):")
        st.dataframe(pd.DataFrame(layers).round(1), hide_index=True)
        most = max(layers, key=lambda r: r["share of the mask (%)"])
        densest = max(layers, key=lambda r: r["fraction of the layer selected (%)"])
        st.caption(f"{most['layer']} ({most['weights']:,} weights) holds {most['share of the mask (%)']:.0f}% of the "
                   f"mask simply by its size; per weight, {densest['layer']} is the most salient "
                   f"({densest['fraction of the layer selected (%)']:.0f}% of it selected).")

    table = why_mask.baseline_table()
    if table:
        st.subheader("Against the other methods, each tuned to be at its best")
        st.markdown("GA, FT, ℓ1-sparse and SSD were tuned per forget kind by a grid search "
                    "(`bench/bench_baselines_tune.py`: the setting closest to Retrain, ties to the cheaper). "
                    "Rows marked *old default* are the settings before tuning.")
        st.dataframe(pd.DataFrame(table).round(2), hide_index=True)

    st.subheader("And on the image generator?")
    if generation is None:
        st.info("No generation ablation yet: run `python bench/bench_generation_ablation.py`.")
    else:
        st.markdown(
            f"The same test on the shipped digit generator: forget one digit (classes "
            f"{', '.join(map(str, generation['classes']))}), SalUn with its {generation['sparsity']:.0%} mask against "
            f"RL with every weight free, identical recipe, seeds {', '.join(map(str, generation['seeds']))}. Each "
            f"model draws {generation['per_class']} images of every digit from the same seeds, judged by the shipped "
            "classifier. A forgetting method should lose as little as possible on the digits it keeps. (Recorded "
            "with upstream's retained loss, the true noise as target; the Diffusion page's default now holds the "
            "kept digits to the original model instead, which keeps them better still: see the README.)")
        st.plotly_chart(why_mask.generation_figure(generation), key="why_generation")
        for sentence in why_mask.generation_reading(generation):
            st.markdown(f"- {sentence}")

    st.caption(f"Source: bench/results/ (MIA-Efficacy with {summary.get('mia_samples', 3)} member samples in the "
               "ablation; generation: generation_ablation.txt).")


def _lesson(counts: dict) -> str:
    if counts["SalUn"] == 0 and counts["RL"] == 0:
        return ("**On this model the mask makes no measurable difference:** RL — the same training with every "
                "weight free — comes as close to Retrain as SalUn does. What makes both work is the recipe: random "
                "labels on the forgotten images while practising on the kept ones.")
    if counts["SalUn"] > counts["RL"]:
        return "Where the mask helps is listed below, learning rate by learning rate."
    return "The mask does not help more often than it hurts here; the details are below."


def _sparsity_targets(summary: dict) -> list[str]:
    return sorted({r["forget"] for r in summary["rows"] if r["stage"] == "sparsity"}) or summary["targets"][:1]


main()

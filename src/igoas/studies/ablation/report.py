"""The study's Markdown table and summary document (table.md)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from igoas.studies.ablation.arms import ARMS
from igoas.studies.ablation.statistics import TABLE_METRICS, verdict

# (column title, summary key, metrics): the corrupted column is filled by the "corrupted"
# evaluation when it is registered (igoas.studies.ablation.EVALUATIONS), "n/a" until then.
COLUMNS = (("occluded", "query", TABLE_METRICS), ("holistic", "holistic", TABLE_METRICS),
           ("stress", "stress", TABLE_METRICS), ("corrupted", "corrupted", ("mAP",)))


def _cell(stats: Mapping[str, Any], seeds: int) -> str:
    return f"{stats['mean']:.1f} ± {stats['std']:.1f}" if seeds > 1 else f"{stats['mean']:.1f}"


def format_table(summary: Mapping[str, Any], arms: Sequence[str], seeds: Sequence[int]) -> str:
    """The Markdown table: one row per arm; occluded, holistic, stress-test and corrupted columns."""
    header = ["method"] + [f"{title} {metric}" for title, _, metrics in COLUMNS for metric in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in arms:
        cells = [arm]
        for _, key, metrics in COLUMNS:
            cells += [_cell(summary[arm][key][metric], len(seeds)) if metric in summary[arm].get(key, {}) else "n/a"
                      for metric in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_bootstrap(bootstrap: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """One line per query set and score: observed difference, interval and verdict."""
    lines = []
    for query_set, scores in bootstrap.items():
        for score, result in scores.items():
            metric = "mAP" if score == "ap" else "R1"
            lines.append(f"- {query_set} {metric}: IGOAS - baseline = {result['difference']:+.1f} points, "
                         f"{100 * result['level']:.0f} % interval [{result['low']:+.1f}, {result['high']:+.1f}] "
                         f"({result['seeds']} seeds x {result['queries']} queries, {result['resamples']} resamples): "
                         f"{verdict(result)}")
    return lines


def format_criteria(criteria: Mapping[str, Any]) -> list[str]:
    """One line per criterion with its numbers and pass/fail."""
    lines = []
    c1 = criteria["C1_mechanism_active"]
    shares = ", ".join(f"{arm} {entry['share_with_zeroed_cell']['min']:.3f}" if "share_with_zeroed_cell" in entry
                       else f"{arm} {entry['problem']}" for arm, entry in c1["arms"].items())
    lines.append(f"- C1 mechanism active (share of steps after epoch 1 with a zeroed stage-4 cell, lowest seed; "
                 f">= {c1['threshold']}): {shares or 'no mask logged'}: {'pass' if c1['passed'] else 'FAIL'}")
    for arm, entry in c1["arms"].items():
        terms = ", ".join(f"{term} {entry[term]['mean']:.3g}" for term in ("mask_suppression", "mask_global")
                          if term in entry)
        if terms:
            lines.append(f"  - {arm}: mean mask-loss terms after epoch 1: {terms}")
    c2 = criteria["C2_pretrained_start"]
    lines.append(f"- C2 pretrained start: {len(c2['trunks'])} trunk(s) {', '.join(t[:12] for t in c2['trunks'])}, "
                 f"fixbase epochs {c2['fixbase_epochs']} (recipe: {c2['expected_fixbase_epochs']}): "
                 f"{'pass' if c2['passed'] else 'FAIL'}")
    c3 = criteria["C3_plateau"]
    gains = ", ".join(f"{arm} {stats['mean']:+.2f}" for arm, stats in c3["gain_last_quarter"].items())
    lines.append(f"- C3 plateau (holistic mAP gained in the last quarter, mean over seeds; baseline < "
                 f"{c3['threshold']}): {gains or 'no curves'}: {'pass' if c3['passed'] else 'FAIL'}")
    c4 = criteria["C4_seeds"]
    lines.append(f"- C4 seeds: {c4['seeds']}: {'pass' if c4['passed'] else 'FAIL'}")
    c5 = criteria["C5_benchmark"]
    shares = ", ".join(f"{split} {100 * entry['share']:.1f} % (Occluded-Duke {100 * entry['occluded_duke']:.0f} %)"
                       if entry["share"] is not None else f"{split} unknown"
                       for split, entry in c5.get("splits", {}).items())
    lines.append(f"- C5 benchmark (occluded share per split within {c5.get('tolerance_points', 0):g} points of "
                 f"Occluded-Duke's): {shares or c5.get('problem')}: {'pass' if c5['passed'] else 'FAIL'}")
    return lines


def table_document(summary: Mapping[str, Any], arms: Sequence[str], seeds: Sequence[int], recipe: str,
                   stress: Any, criteria: Mapping[str, Any], bootstrap: Mapping[str, Any]) -> str:
    """table.md: the table, what its columns mean, the criteria and the bootstrap."""
    spread = "mean ± standard deviation over seeds" if len(seeds) > 1 else "one seed"
    areas = ", ".join(f"{a:g}" for a in stress.areas if a > 0)
    seed_words = f"Seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
    parts = [
        f"# Ablation on the synthetic occluded benchmark (recipe `{recipe}`)", "",
        f"{seed_words}; values in percent at the last epoch, {spread}. \"occluded\": the occluded queries; "
        "\"holistic\": the same frames without their occluder, against the same gallery; \"stress\": the holistic "
        f"queries occluded by {stress.occluder}s of {areas} % of the image at {', '.join(stress.positions)}, "
        "averaged over those settings; \"corrupted\": mean mAP over the image corruptions (n/a: not evaluated).", "",
        format_table(summary, arms, seeds), "",
        "Methods: " + "; ".join(f"`{arm}` = {ARMS[arm].description}" for arm in arms) + ".", "",
        "## Criteria", "", *format_criteria(criteria), ""]
    if bootstrap:
        parts += ["## IGOAS against the baseline, paired bootstrap over queries", "", *format_bootstrap(bootstrap), ""]
    parts += ["Figures: `curves.png` (mAP over epochs per method), `stress.png` (stress-test curves), "
              "`activations.png` (stage-4 activation maps of the first seed's models, when their checkpoints are "
              "there).", ""]
    return "\n".join(parts)

"""The outcome of a ranking evaluation, and how it is printed and saved."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

# The ranks the field reports in tables.
REPORTED_RANKS = (1, 5, 10)


@dataclass(frozen=True)
class RankResult:
    """CMC, mAP and mINP over the queries that have at least one valid gallery match.

    `cmc[k]` is the fraction of those queries whose first true match is within the top k+1;
    `tpr_at_fpr` maps a false positive rate to the true positive rate of the query-gallery
    pairs there (empty unless asked for). Every value here is a fraction in [0, 1]
    (`to_dict` gives percent).
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid_queries: int
    num_skipped_queries: int
    tpr_at_fpr: Mapping[float, float] = field(default_factory=dict)

    def rank(self, k: int) -> float:
        """Rank-k accuracy as a fraction (k counted from 1)."""
        return float(self.cmc[k - 1])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: R1/R5/R10, mAP, mINP and the CMC curve in percent, and the query counts."""
        summary: dict[str, Any] = {
            f"R{k}": 100.0 * self.rank(k) for k in REPORTED_RANKS if k <= len(self.cmc)
        }
        summary["mAP"] = 100.0 * float(self.mAP)
        summary["mINP"] = 100.0 * float(self.mINP)
        summary.update({tpr_label(fpr): 100.0 * float(tpr) for fpr, tpr in self.tpr_at_fpr.items()})
        summary["num_valid_queries"] = int(self.num_valid_queries)
        summary["num_skipped_queries"] = int(self.num_skipped_queries)
        summary["cmc"] = [100.0 * float(v) for v in self.cmc]
        return summary

    def table(self, name: str = "") -> str:
        """A small aligned text table of this result."""
        return format_table({name: self})


def tpr_label(fpr: float) -> str:
    """"TPR@1e-4" for 0.0001: the column and JSON key of a TPR at a false positive rate."""
    mantissa, exponent = f"{fpr:.0e}".split("e")
    return f"TPR@{mantissa}e{int(exponent)}"


def format_table(results: Mapping[str, RankResult]) -> str:
    """One row per named result (e.g. occluded and holistic queries), columns in percent."""
    fprs = sorted({fpr for result in results.values() for fpr in result.tpr_at_fpr})
    columns = [f"R{k}" for k in REPORTED_RANKS] + ["mAP", "mINP"] + [tpr_label(fpr) for fpr in fprs]
    name_width = max([len("query set")] + [len(name) for name in results])
    lines = ["  ".join([f"{'query set':<{name_width}}"] + [f"{c:>6}" for c in columns])]
    for name, result in results.items():
        values = result.to_dict()
        cells = [f"{values[c]:{max(6, len(c))}.1f}" if c in values else f"{'-':>{max(6, len(c))}}" for c in columns]
        lines.append("  ".join([f"{name:<{name_width}}"] + cells))
    skipped = sum(r.num_skipped_queries for r in results.values())
    if skipped:
        lines.append(f"({skipped} queries without a valid gallery match were skipped)")
    return "\n".join(lines)

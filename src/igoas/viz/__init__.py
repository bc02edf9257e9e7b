"""Figures of the paper and of a run, and the run's HTML report.

Every plotting function writes a PNG atomically and returns its path. matplotlib is
imported only when a figure is drawn, through its object API with the Agg canvas, so
importing this package costs nothing and never changes a user's pyplot backend.
"""
from igoas.evaluation.verification import RocCurve, pair_distances, roc_curve, sampled_pair_distances
from igoas.utils.fileio import read_jsonl
from igoas.viz.activations import activation_maps, normalize_per_image, plot_activation_comparison, plot_activation_maps
from igoas.viz.curves import plot_cmc_curves, plot_training_curves
from igoas.viz.distances import plot_distance_distributions, plot_roc
from igoas.viz.occlusion_figure import occlusion_examples, plot_occlusion_methods
from igoas.viz.ranking import RankedLists, plot_ranked_list_per_query, plot_ranked_lists, top_ranked
from igoas.viz.report import write_html_report
from igoas.viz.robustness_figure import plot_robustness
from igoas.viz.run_logs import load_run_logs

__all__ = [
    "RankedLists",
    "RocCurve",
    "activation_maps",
    "load_run_logs",
    "normalize_per_image",
    "occlusion_examples",
    "pair_distances",
    "plot_activation_comparison",
    "plot_activation_maps",
    "plot_cmc_curves",
    "plot_distance_distributions",
    "plot_occlusion_methods",
    "plot_ranked_list_per_query",
    "plot_ranked_lists",
    "plot_robustness",
    "plot_roc",
    "plot_training_curves",
    "read_jsonl",
    "roc_curve",
    "sampled_pair_distances",
    "top_ranked",
    "write_html_report",
]

"""The demo: the whole pipeline on the embedded synthetic dataset (`igoas demo`, `run_demo`).

Renders the synthetic occluded-pedestrian set (cached), measures an untrained network,
trains IGOAS with a CPU-sized preset, evaluates the occluded and the holistic queries,
prints the comparison and writes a report folder: the run (config, checkpoints, logs,
TensorBoard events), `metrics.json`, CMC and ranked-list figures and `report.html`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from igoas.artifacts.checkpoint import model_from_checkpoint
from igoas.artifacts.provenance import evaluation_record
from igoas.artifacts.run_dir import LOCK_FILE, RunDir
from igoas.compute.runtime import Runtime
from igoas.config import load_config, model_arguments, to_dict
from igoas.data import build_dataset
from igoas.evaluation import compute_distance, format_table
from igoas.evaluation.model_evaluation import embed_dataset, rank_query_sets, results_document
from igoas.imaging.preprocess import Preprocess
from igoas.model import build_model
from igoas.training.trainer import set_cpu_threads, train
from igoas.utils.errors import ConfigError
from igoas.utils.fileio import atomic_write, write_json
from igoas.utils.seeding import seed_everything
from igoas.viz import RankedLists, plot_cmc_curves, write_html_report

PRESET, QUICK_PRESET = "synthetic_demo", "synthetic_demo_quick"
RANKED_QUERIES = 6  # rows of the ranked-list figure
# What the synthetic set's query sets are, for people reading the table and the figures.
SHOWN_AS = {"query": "occluded queries", "holistic": "holistic queries"}


def run_demo(out_dir: str | Path = "runs/demo", quick: bool = False, data_dir: str | Path | None = None,
             overrides: Sequence[str] = (), overwrite: bool = False) -> dict[str, Any]:
    """Run the demo and return what it wrote to `out_dir/metrics.json`.

    A re-run replaces the run of an earlier demo in `out_dir`; a folder holding anything
    else is refused unless `overwrite`, which replaces its run files."""

    out = Path(out_dir)
    cfg = load_config(QUICK_PRESET if quick else PRESET, overrides)
    # set on the config, not as overrides, so YAML never reads the paths ("#", "yes", ": ");
    # the root saved absolute, so `igoas eval` of the checkpoint reads these images from any folder
    cfg.train.output_dir = str(out)
    cfg.data.root = str(Path(data_dir or cfg.data.root).resolve())
    _claim_folder(out, overwrite)
    set_cpu_threads(cfg.train.cpu_threads)
    print(f"[demo] synthetic occluded pedestrians in {cfg.data.root} (rendered on first use, then cached)")
    dataset = build_dataset(cfg.data.dataset, cfg.data.root, **to_dict(cfg.data.options))
    print(f"[demo] {len(dataset.train)} training images of {dataset.num_train_pids} identities; "
          f"{len(dataset.query)} occluded queries, their holistic twins, {len(dataset.gallery)} gallery images")

    # The reference: the network the run starts from (same architecture, seed and initialisation).
    seed_everything(cfg.train.seed)
    untrained = build_model(num_classes=dataset.num_train_pids, pretrained=cfg.model.pretrained,
                            **model_arguments(cfg.model))
    untrained_results, _ = _evaluate(untrained, dataset, cfg)

    print(f"[demo] training {cfg.model.name} ({cfg.model.backbone}, {cfg.data.height}x{cfg.data.width}) "
          f"for {cfg.train.epochs} epochs")
    try:
        result = train(cfg, overwrite=True)  # the folder is the demo's own (checked above): a re-run replaces it
    finally:
        _mark_as_demo(out)  # a fresh run clears the marker: set it again, even when training is interrupted
    model, _ = model_from_checkpoint(result.last_checkpoint)
    trained_results, features = _evaluate(model, dataset, cfg)

    table = {f"{SHOWN_AS.get(name, name)}, trained": value for name, value in trained_results.items()}
    table.update({f"{SHOWN_AS.get(name, name)}, untrained": value for name, value in untrained_results.items()})
    print(format_table(table))
    figures = _figures(out, trained_results, untrained_results, features)
    document = _document(trained_results, untrained_results, result, figures, cfg, dataset)
    write_json(RunDir(out).final_metrics, document)
    report = _report(out)
    print(f"[demo] occluded queries: mAP {document['mAP']:.1f} % trained vs "
          f"{document['untrained']['mAP']:.1f} % untrained"
          + (f" (--quick: a smoke test on {len(dataset.query)} queries, not a result)" if quick else ""))
    print(f"[demo] report folder {out}: metrics.json, {', '.join(str(p.relative_to(out)) for p in figures)}"
          + (f", {report.relative_to(out)}" if report else "") + f"; TensorBoard: tensorboard --logdir {out}")
    return document


def _claim_folder(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, a folder holding files an earlier demo did not write (a
    training run's checkpoints must not vanish into a demo), then mark it as the demo's."""

    if out.is_dir() and not overwrite and not RunDir(out).demo_marker.is_file() and not _holds_demo_report(out):
        foreign = sorted(path.name for path in out.iterdir() if path.name != LOCK_FILE)
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise ConfigError(f"{out} holds files an earlier demo did not write ({shown}); give the demo another "
                              "--out folder, or pass --overwrite to replace the run files there")
    _mark_as_demo(out)


def _mark_as_demo(out: Path) -> None:
    atomic_write(RunDir(out).demo_marker,
                 lambda handle: handle.write(b"written by igoas demo: a re-run of the demo replaces it\n"))


def _holds_demo_report(out: Path) -> bool:
    """Whether `out` holds the demo's metrics.json (folders written before the marker existed)."""
    import json

    try:
        document = json.loads(RunDir(out).final_metrics.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and "untrained" in document


def _evaluate(model: Any, dataset: Any, cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Results per query set ("query" = occluded, "holistic") and the embeddings behind them."""

    features = embed_dataset(model, dataset, cfg, cfg.eval, Runtime.resolve(cfg.train.device, cfg.eval.precision))
    return rank_query_sets(features, cfg.eval), features


def _figures(out: Path, trained: dict[str, Any], untrained: dict[str, Any], features: dict[str, Any]) -> list[Path]:
    """CMC curves of every query set (trained and untrained) and the occluded queries' ranked lists."""
    try:
        return [_cmc_figure(out, trained, untrained), _ranked_list_figure(out, features)]
    except ImportError as err:  # matplotlib is optional
        print(f"[demo] figures skipped: {err} (pip install matplotlib)")
        return []


def _cmc_figure(out: Path, trained: dict[str, Any], untrained: dict[str, Any]) -> Path:
    curves = {f"{SHOWN_AS.get(name, name)}, trained": r.cmc for name, r in trained.items()}
    curves.update({f"{SHOWN_AS.get(name, name)}, untrained": r.cmc for name, r in untrained.items()})
    return plot_cmc_curves(curves, out / "figures" / "cmc.png")


def _ranked_list_figure(out: Path, features: dict[str, Any]) -> Path:
    import numpy as np

    queries, gallery = features["query"], features["gallery"]
    # queries spread over the whole set, not just its first identities
    rows = np.unique(np.linspace(0, len(queries) - 1, RANKED_QUERIES).round().astype(int))
    distances = compute_distance(queries.embeddings[rows], gallery.embeddings)
    lists = RankedLists.from_distances(distances, [queries.paths[i] for i in rows], queries.pids[rows],
                                       queries.camids[rows], gallery.paths, gallery.pids, gallery.camids, topk=10)
    return lists.plot(out / "figures" / "ranked_lists.png")[0]


def _document(trained: dict[str, Any], untrained: dict[str, Any], result: Any, figures: list[Path],
              cfg: Any, dataset: Any) -> dict[str, Any]:

    document = results_document(trained, epoch=result.epoch, query_sets_shown_as=SHOWN_AS,
                                **evaluation_record(cfg, result.last_checkpoint, Preprocess.from_config(cfg).to_dict(),
                                                    {cfg.data.dataset: dataset}))
    document["untrained"] = results_document(untrained)
    document["figures"] = [str(path) for path in figures]
    return document


def _report(out: Path) -> Path | None:
    try:
        return write_html_report(out)
    except ImportError as err:
        print(f"[demo] HTML report skipped: {err}")
        return None

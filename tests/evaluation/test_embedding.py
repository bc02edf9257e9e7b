"""One embedding path: every entry point gives the same embeddings for the same images."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from igoas.artifacts.checkpoint import load_checkpoint, model_from_checkpoint
from igoas.imaging.preprocess import Preprocess
from igoas.evaluation.embedding import embed
from igoas.compute.runtime import Runtime
from igoas.utils.errors import IgoasError


@pytest.fixture(scope="module")
def samples(synthetic_root: Path) -> list:
    from igoas.data import build_dataset

    dataset = build_dataset("synthetic", synthetic_root)
    return dataset.query[:4] + dataset.gallery[:3]


@pytest.mark.slow
def test_every_entry_point_gives_identical_embeddings(tiny_checkpoint: Path, samples: list, tmp_path: Path) -> None:
    from igoas.config import EvalConfig
    from igoas.evaluation.model_evaluation import embed_dataset
    from igoas.deploy.extraction import ImageList, extract
    from igoas.deploy.inference import ReIDModel
    from igoas.robustness.occlusion_stress import OccludedImages

    model, payload = model_from_checkpoint(tiny_checkpoint)
    reference = embed(model, samples, payload)
    paths = [s.path for s in samples]
    assert reference.paths == paths and list(reference.pids) == [s.pid for s in samples]

    # evaluation (training, `igoas eval`, the demo, the ablation): embed_dataset / embed_samples
    evaluated = embed_dataset(model, SimpleNamespace(gallery=samples, query=samples[:2]), payload, EvalConfig())
    np.testing.assert_array_equal(evaluated["gallery"].embeddings, reference.embeddings)
    # the stress test reads its clean images through its own dataset of prepared items
    preprocess = Preprocess.resolve(payload)
    stressed = embed(model, OccludedImages(samples, preprocess, 0.0), runtime=Runtime())
    np.testing.assert_array_equal(stressed.embeddings, reference.embeddings)
    # the Python API, `igoas extract` and the figures (which embed through extract): the same unit rows
    reid = ReIDModel.from_checkpoint(tiny_checkpoint, precision="fp32", channels_last=False)
    np.testing.assert_array_equal(reid.embed(paths), reference.embeddings)
    images = ImageList(paths=paths, pids=[s.pid for s in samples], camids=[s.camid for s in samples], description="x")
    extracted = extract(reid, images, out=tmp_path / "f.npz")
    np.testing.assert_array_equal(extracted.embeddings, reference.embeddings)
    np.testing.assert_array_equal(extracted.pids, reference.pids)


@pytest.mark.parametrize("flip", [False, True])
def test_embeddings_are_unit_rows_ranked_as_the_network_output(tiny_checkpoint: Path, samples: list,
                                                                flip: bool) -> None:
    """The IGOAS output concatenates two unit halves (norm sqrt(2)); `embed` scales it to 1,
    which halves every squared Euclidean distance and so keeps the protocol's rankings."""
    from igoas.evaluation import compute_distance, evaluate_features

    model, payload = model_from_checkpoint(tiny_checkpoint)
    rows = embed(model, samples, payload, flip=flip).embeddings
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-6)
    with torch.no_grad():
        raw = model.eval()(Preprocess.resolve(payload)([s.path for s in samples])).numpy()
    assert np.allclose(np.linalg.norm(raw, axis=1), np.sqrt(2), atol=1e-5), "two unit halves"
    if not flip:
        np.testing.assert_allclose(rows, raw / np.sqrt(2), atol=1e-6)
        np.testing.assert_allclose(compute_distance(rows[:4], rows[4:]), compute_distance(raw[:4], raw[4:]) / 2,
                                   atol=1e-5)
        labels = [np.array([s.pid for s in part]) for part in (samples[:4], samples[4:])]
        cams = [np.array([s.camid for s in part]) for part in (samples[:4], samples[4:])]
        unit, network = (evaluate_features(f[:4], f[4:], *labels, *cams, max_rank=3) for f in (rows, raw))
        assert (unit.mAP, list(unit.cmc)) == (network.mAP, list(network.cmc)), "the protocol's scores are unchanged"


def test_preprocess_of_any_input_matches_the_evaluation_transform(samples: list, tiny_checkpoint: Path) -> None:
    from igoas.imaging.images import load_image
    from igoas.data import build_transforms

    preprocess = Preprocess.resolve(load_checkpoint(tiny_checkpoint))
    transform = build_transforms(preprocess.height, preprocess.width, train=False)
    for sample in samples[:3]:
        expected = transform(load_image(sample.path)).as_subclass(torch.Tensor)
        assert torch.equal(preprocess([sample.path])[0], expected)
        assert torch.equal(preprocess(load_image(sample.path).numpy().transpose(1, 2, 0))[0], expected)


def test_unreadable_files_fail_or_are_reported(tiny_checkpoint: Path, samples: list, tmp_path: Path) -> None:
    model, payload = model_from_checkpoint(tiny_checkpoint)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(IgoasError, match="broken.jpg"):
        embed(model, [samples[0].path, str(broken)], payload)
    kept = embed(model, [samples[0].path, str(broken)], payload, on_error="skip")
    assert kept.paths == [samples[0].path] and kept.bad_paths == [str(broken)]
    assert "not a readable image" in kept.bad[str(broken)]
    with pytest.raises(IgoasError, match="on_error"):
        embed(model, [samples[0].path], payload, on_error="ignore")


def test_distributed_skip_keeps_rows_and_labels_aligned(tiny_checkpoint: Path, samples: list, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes, one unreadable file in the first share: the gathered rows, paths,
    identities and skipped files line up. The group is simulated in one process: rank 1
    embeds its share first, then rank 0's gathers return both shares in rank order."""
    from igoas.compute.distributed import DistributedContext

    model, payload = model_from_checkpoint(tiny_checkpoint)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    items = [samples[0], SimpleNamespace(path=str(broken), pid=99, camid=9), samples[1], samples[2]]
    shared: dict[str, dict[int, object]] = {"rows": {}, "objects": {}}

    def gathered(kind: str, value: object, ctx: DistributedContext) -> list:
        shared[kind][ctx.rank] = value
        return [shared[kind][rank] for rank in sorted(shared[kind])]

    monkeypatch.setattr("igoas.evaluation.embedding.gather_rows", lambda rows, ctx: torch.cat(gathered("rows", rows, ctx)))
    monkeypatch.setattr("igoas.evaluation.embedding.gather_objects", lambda value, ctx: gathered("objects", value, ctx))
    for rank in (1, 0):
        result = embed(model, items, payload, Runtime(ctx=DistributedContext(rank, 2)), on_error="skip")
    kept = [samples[0], samples[1], samples[2]]
    assert result.paths == [str(s.path) for s in kept] and result.bad_paths == [str(broken)]
    assert list(result.pids) == [s.pid for s in kept] and list(result.camids) == [s.camid for s in kept]
    # other batch compositions, so equal up to float summation order
    np.testing.assert_allclose(result.embeddings, embed(model, kept, payload).embeddings, rtol=1e-4, atol=1e-6)


def test_embedding_restores_training_mode_and_resolves_the_runtime(tiny_checkpoint: Path, samples: list) -> None:
    model, payload = model_from_checkpoint(tiny_checkpoint)
    model.train()
    next(iter(model.children())).eval()  # a fixbase epoch keeps some layers in eval mode
    modes = {name: module.training for name, module in model.named_modules()}
    embed(model, samples[:2], payload)
    assert {name: module.training for name, module in model.named_modules()} == modes
    runtime = Runtime.resolve("cpu", "auto", "auto")
    assert runtime.device == torch.device("cpu") and runtime.precision in ("fp32", "bf16")
    assert not runtime.distributed

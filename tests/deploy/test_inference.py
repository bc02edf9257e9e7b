"""ReIDModel: loading from a checkpoint, preprocessing from the checkpoint, embedding any input kind."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from igoas.artifacts.checkpoint import load_checkpoint
from igoas.utils.errors import CheckpointError, IgoasError
from igoas.deploy.inference import ReIDModel
from igoas.imaging.preprocess import Preprocess


@pytest.fixture(scope="module")
def reid(tiny_checkpoint: Path) -> ReIDModel:
    return ReIDModel.from_checkpoint(tiny_checkpoint, precision="fp32", channels_last=False)


@pytest.fixture(scope="module")
def image_paths(synthetic_root: Path) -> list[str]:
    from igoas.data import build_dataset

    return [s.path for s in build_dataset("synthetic", synthetic_root).query[:6]]


def test_preprocessing_comes_from_the_checkpoint(reid: ReIDModel, tiny_checkpoint: Path) -> None:
    stored = load_checkpoint(tiny_checkpoint)["preprocess"]
    assert reid.preprocess_config.to_dict() == {**stored, "mean": list(stored["mean"]), "std": list(stored["std"])}
    # a constant image maps to exactly (value/255 - mean) / std at the stored input size
    value = 200
    batch = reid.preprocess(np.full((100, 37, 3), value, dtype=np.uint8))
    assert batch.shape == (1, 3, stored["height"], stored["width"])
    expected = (value / 255 - torch.tensor(stored["mean"])) / torch.tensor(stored["std"])
    torch.testing.assert_close(batch[0].mean(dim=(1, 2)), expected.float(), rtol=0, atol=1e-5)
    torch.testing.assert_close(batch[0].std(dim=(1, 2)), torch.zeros(3), rtol=0, atol=1e-5)


def test_embeddings_are_deterministic_unit_length_float32(reid: ReIDModel, image_paths: list[str]) -> None:
    first = reid.embed(image_paths)
    second = reid.embed(image_paths)
    assert first.dtype == np.float32 and first.shape == (len(image_paths), reid.embedding_dim)
    assert reid.embedding_dim == 1024
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    # different people give different embeddings (the model is not constant)
    assert np.abs(first[0] - first[-1]).max() > 1e-3


def test_embedding_equals_the_network_on_the_preprocessed_batch(reid: ReIDModel, image_paths: list[str]) -> None:
    with torch.no_grad():
        raw = reid.network(reid.preprocess(image_paths))
    expected = torch.nn.functional.normalize(raw, dim=1).numpy()
    np.testing.assert_allclose(reid.embed(image_paths), expected, atol=1e-5)


def test_every_input_kind_gives_the_same_embedding(reid: ReIDModel, image_paths: list[str]) -> None:
    path = image_paths[0]
    pil = Image.open(path).convert("RGB")
    array = np.array(pil)
    uint8_chw = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    float_chw = uint8_chw.float() / 255
    reference = reid.embed(path)
    exact_kinds = [Path(path), pil, array, uint8_chw, uint8_chw.unsqueeze(0), array[None], [pil]]
    for kind in exact_kinds:
        np.testing.assert_allclose(reid.embed(kind), reference, atol=1e-6, err_msg=type(kind).__name__)
    # float input is resized in float rather than in 0-255 steps: equal up to rounding
    cosine = float((reid.embed(float_chw) * reference).sum())
    assert cosine > 0.9999
    mixed = reid.embed([path, pil, array, uint8_chw])
    np.testing.assert_allclose(mixed, np.repeat(reference, 4, axis=0), atol=1e-6)


def test_batching_does_not_change_embeddings(reid: ReIDModel, image_paths: list[str]) -> None:
    together = reid.embed(image_paths, batch_size=64)
    one_by_one = reid.embed(image_paths, batch_size=1)
    in_pairs = reid.embed(image_paths, batch_size=2, output="torch")
    assert isinstance(in_pairs, torch.Tensor) and in_pairs.dtype == torch.float32
    np.testing.assert_allclose(one_by_one, together, atol=1e-5)
    np.testing.assert_allclose(in_pairs.numpy(), together, atol=1e-5)


def test_reduced_precision_stays_close_to_fp32(tiny_checkpoint: Path, reid: ReIDModel, image_paths: list[str]) -> None:
    fast = ReIDModel.from_checkpoint(tiny_checkpoint, precision="auto", channels_last="auto")
    cosine = np.sum(fast.embed(image_paths) * reid.embed(image_paths), axis=1)
    assert cosine.min() > 0.99


def test_empty_input_gives_an_empty_matrix(reid: ReIDModel) -> None:
    assert reid.embed([]).shape == (0, reid.embedding_dim)


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        ReIDModel.from_checkpoint(tmp_path / "absent.pth")


def test_checkpoint_without_preprocess_is_refused(tiny_checkpoint: Path) -> None:
    payload = load_checkpoint(tiny_checkpoint)
    del payload["preprocess"]
    with pytest.raises(CheckpointError, match="preprocess"):
        ReIDModel.from_checkpoint(payload)


def test_bad_images_are_clear_errors(reid: ReIDModel, tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    with pytest.raises(IgoasError, match="notes.jpg: not a readable image"):
        reid.embed(text)
    with pytest.raises(IgoasError, match="no such image file"):
        reid.embed(tmp_path / "absent.png")
    with pytest.raises(IgoasError, match=r"\[0, 1\]"):
        reid.embed(torch.full((3, 64, 32), 255.0))  # 0-255 values passed as float
    with pytest.raises(IgoasError, match="cannot use an object"):
        reid.embed(12345)


def test_preprocess_rejects_unknown_interpolation() -> None:
    with pytest.raises(IgoasError, match="interpolation"):
        Preprocess(64, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), interpolation="sinc")


def test_from_config_and_bare_weights_equals_from_checkpoint(
    tiny_checkpoint: Path, reid: ReIDModel, image_paths: list[str], tmp_path: Path
) -> None:
    payload = load_checkpoint(tiny_checkpoint)
    spec, stored = payload["model_spec"], payload["preprocess"]
    config = {
        "model": {"name": spec["name"], "backbone": spec["backbone"], "options": dict(spec["options"])},
        "data": {"height": stored["height"], "width": stored["width"], "mean": list(stored["mean"]),
                 "std": list(stored["std"])},
    }
    weights = tmp_path / "weights.pth"
    torch.save(payload["model"], weights)
    rebuilt = ReIDModel.from_config(config, weights, precision="fp32", channels_last=False)
    np.testing.assert_allclose(rebuilt.embed(image_paths), reid.embed(image_paths), atol=1e-6)
    torch.save({"optimizer": {}}, weights)
    with pytest.raises(CheckpointError, match="no model weights"):
        ReIDModel.from_config(config, weights)


def test_preprocessing_matches_the_evaluation_transforms(reid: ReIDModel, image_paths: list[str]) -> None:
    from igoas.data import build_transforms, read_image

    config = reid.preprocess_config
    evaluation = build_transforms(config.height, config.width, train=False, mean=config.mean, std=config.std)
    expected = torch.stack([evaluation(read_image(path)) for path in image_paths])
    torch.testing.assert_close(reid.preprocess(image_paths), expected, rtol=0, atol=1e-6)

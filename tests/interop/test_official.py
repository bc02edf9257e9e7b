"""Import and export of the authors' (torchreid) IGOAS checkpoints.

Driven by tests/interop/fixtures/official_keys_702.json, the authors' state-dict keys and shapes
for 702 identities: synthetic checkpoints in exactly that layout, with random weights and
random BatchNorm statistics, stand in for real ones.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from factories import OFFICIAL_LAYOUT, random_official_state

from igoas.cli import main
from igoas.artifacts.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from igoas.utils.errors import CheckpointError, IgoasError
from igoas.interop import KEY_CORRESPONDENCE, export_official, import_official
from igoas.interop.official import (OFFICIAL_BACKBONE, OFFICIAL_OPTIONS, igoas_to_official_key, official_to_igoas_key,
                                    read_official_checkpoint)
from igoas.model import build_model

NUM_CLASSES = OFFICIAL_LAYOUT["num_classes"]
SHAPES: dict[str, list[int]] = OFFICIAL_LAYOUT["tensors"]
# A small input keeps the ResNet-50 forward cheap; the mapping does not depend on the size.
TINY_INPUT = (2, 3, 32, 16)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny forwards run faster on one thread: on busy shared runners OpenMP start-up dominates them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def torchreid_extras() -> dict:
    """What torchreid saves beside the weights: epoch, a numpy rank-1, Adam and MultiStepLR states."""
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(4))]
    optimizer = torch.optim.Adam(params, lr=3e-4, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[20, 40], gamma=0.1)
    sum(p.sum() for p in params).backward()
    optimizer.step()
    scheduler.step()
    return {"epoch": 60, "rank1": np.float32(0.601), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict()}


@pytest.fixture(scope="module")
def official_state() -> dict[str, torch.Tensor]:
    return random_official_state()


@pytest.fixture(scope="module")
def official_file(official_state: dict[str, torch.Tensor], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint as the authors' two-GPU training saved it: `module.` keys plus training state."""
    path = tmp_path_factory.mktemp("official") / "model.pth.tar-60"
    torch.save({"state_dict": {f"module.{k}": v for k, v in official_state.items()}, **torchreid_extras()}, path)
    return path


def assert_equals_source(model: torch.nn.Module, source: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert len(state) == len(source)
    for key, value in source.items():
        mine = state[official_to_igoas_key(key)]
        assert mine.dtype == value.dtype and torch.equal(mine, value), key


# ---------------------------------------------------------------------------- the correspondence
def test_correspondence_maps_the_authors_layout_one_to_one_onto_the_network() -> None:
    with torch.device("meta"):
        network = build_model("igoas", num_classes=NUM_CLASSES, backbone=OFFICIAL_BACKBONE, **OFFICIAL_OPTIONS)
    expected = {key: list(value.shape) for key, value in network.state_dict().items()}
    mapped = {official_to_igoas_key(key): shape for key, shape in SHAPES.items()}
    assert None not in mapped
    assert len(mapped) == len(SHAPES)  # injective
    assert mapped == expected  # onto, with equal shapes, BatchNorm buffers included
    assert all(igoas_to_official_key(official_to_igoas_key(key)) == key for key in SHAPES)
    assert any(key.endswith("running_var") for key in SHAPES)
    assert any(key.endswith("num_batches_tracked") for key in SHAPES)


def test_no_prefix_of_the_table_shadows_another() -> None:
    for side in (list(KEY_CORRESPONDENCE), list(KEY_CORRESPONDENCE.values())):
        for a in side:
            assert not any(b != a and b.startswith(a + ".") for b in side), a


# In bfe.py's forward, the eval embedding is cat(global 512, suppression 512) with
# global = reduction1(avgpool(res_part1(layer41(x)))) and
# suppression = reduction2(maxpool(att_module2(res_part2(layer42(att1(x)))))); in training,
# classifier1/2/3 score the global, suppression and concatenated features.
EMBEDDING_HALF_OF = {"layer41": 0, "res_part1": 0, "reduction1": 0,
                     "att1": 1, "layer42": 1, "res_part2": 1, "att_module2": 1, "reduction2": 1}
LOGITS_OF = {"classifier1": "global", "classifier2": "suppression", "classifier3": "concat"}


@contextlib.contextmanager
def perturbed(network: torch.nn.Module, official_module: str) -> Iterator[torch.nn.Module]:
    """`network` with the parameters the authors name `official_module.*` changed, restored afterwards."""
    chosen = [p for name, p in network.named_parameters()
              if igoas_to_official_key(name).startswith(official_module + ".")]
    saved = [p.detach().clone() for p in chosen]
    with torch.no_grad():
        for parameter in chosen:
            parameter.add_(torch.randn_like(parameter) * 0.1)
    try:
        yield network
    finally:
        with torch.no_grad():
            for parameter, value in zip(chosen, saved):
                parameter.copy_(value)


@pytest.mark.slow
def test_each_authors_module_lands_in_the_branch_it_feeds_in_their_forward() -> None:
    torch.manual_seed(0)
    network = build_model("igoas", num_classes=NUM_CLASSES, backbone=OFFICIAL_BACKBONE).eval()
    images = torch.randn(*TINY_INPUT)
    with torch.no_grad():
        reference = network(images).split(512, dim=1)
        for module, half in EMBEDDING_HALF_OF.items():
            with perturbed(network, module) as changed_network:
                changed = changed_network(images).split(512, dim=1)
            assert torch.equal(changed[1 - half], reference[1 - half]), module
            assert not torch.allclose(changed[half], reference[half]), module

        # Training mode: BatchNorm uses batch statistics, the seeded generator fixes the occlusion.
        network.train()
        base = network(images, progress=0.0, generator=torch.Generator().manual_seed(0)).logits
        for module, head in LOGITS_OF.items():
            with perturbed(network, module) as changed_network:
                changed = changed_network(images, progress=0.0, generator=torch.Generator().manual_seed(0)).logits
            assert all(torch.equal(changed[other], base[other]) for other in base if other != head), module
            assert not torch.allclose(changed[head], base[head]), module


# ---------------------------------------------------------------------------- import
@pytest.mark.slow
def test_import_torchreid_checkpoint_gives_every_source_tensor(
    official_file: Path, official_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    out = tmp_path / "imported.pth"
    model, payload = import_official(official_file, out=out)
    assert not model.training
    assert_equals_source(model, official_state)
    assert payload["model_spec"]["num_classes"] == NUM_CLASSES
    assert payload["preprocess"]["height"] == 384 and payload["preprocess"]["width"] == 128
    assert payload["preprocess"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    source = payload["source"]
    assert source["format"] == "torchreid" and source["file"] == str(official_file)
    assert source["epoch"] == 60 and isinstance(source["rank1"], float)
    assert source["rank1"] == pytest.approx(0.601) and source["module_prefix"] is True
    assert source["dropped_keys"] == []
    # What was written is a normal igoas checkpoint that the generic loader accepts.
    rebuilt, written = model_from_checkpoint(out)
    assert written["source"] == source
    assert_equals_source(rebuilt, official_state)


def test_bare_state_dict_without_prefix_and_the_earlier_classifier4(
    official_state: dict[str, torch.Tensor], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The earlier f3b800b version of bfe.py also built an unused classifier4: dropped with a notice.
    path = tmp_path / "f3b800b.pth"
    extra = {"classifier4.weight": torch.randn(NUM_CLASSES, 512), "classifier4.bias": torch.randn(NUM_CLASSES)}
    torch.save({**official_state, **extra}, path)
    with caplog.at_level(logging.WARNING, logger="igoas.interop.official"):
        model, payload = import_official(path)
    assert_equals_source(model, official_state)
    source = payload["source"]
    assert sorted(source["dropped_keys"]) == ["classifier4.bias", "classifier4.weight"]
    assert "classifier4" in caplog.text and "f3b800b" in caplog.text
    assert source["module_prefix"] is False and source["epoch"] is None and source["rank1"] is None


# ---------------------------------------------------------------------------- export and round trip
@pytest.mark.slow
def test_export_import_round_trip_is_bit_identical_and_keeps_the_embedding(tmp_path: Path) -> None:
    torch.manual_seed(3)
    network = build_model("igoas", num_classes=NUM_CLASSES, backbone=OFFICIAL_BACKBONE)
    with torch.no_grad():  # move BatchNorm statistics away from their initial 0/1
        for name, buffer in network.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
            elif name.endswith("num_batches_tracked"):
                buffer.fill_(1234)
    network.eval()
    # As the trainer saves it: igoas epochs completed and rank-1 in percent per query set.
    payload = {"model_spec": network.spec, "model": network.state_dict(), "epoch": 12,
               "metrics": {"query": {"R1": 50.0, "mAP": 40.0}}}
    exported = export_official(payload, tmp_path / "model-best.pth.tar")

    content = torch.load(exported, weights_only=True)
    assert content["epoch"] == 12 and content["rank1"] == 0.5 and content["optimizer"] is None
    layout = {key: list(value.shape) for key, value in content["state_dict"].items()}
    assert layout == SHAPES  # exactly the keys and shapes the authors' model loads, no `module.`

    imported, payload = import_official(exported)
    original = network.state_dict()
    for key, value in imported.state_dict().items():
        assert value.dtype == original[key].dtype and torch.equal(value, original[key]), key
    images = torch.randn(*TINY_INPUT, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(imported(images), network(images))
    assert payload["source"]["epoch"] == 12 and payload["source"]["rank1"] == 0.5


def test_export_refuses_networks_the_authors_code_cannot_run(tmp_path: Path) -> None:
    out = tmp_path / "x.pth.tar"
    small = build_model("igoas", num_classes=5, backbone="resnet18")
    with pytest.raises(CheckpointError, match="resnet18"):
        export_official(small, out)
    with torch.device("meta"):
        other_pooling = build_model("igoas", num_classes=5, suppression_pooling="avg")
    with pytest.raises(CheckpointError, match="suppression_pooling"):
        export_official(other_pooling, out)
    with pytest.raises(IgoasError, match="fraction"):
        export_official(small, out, rank1=60.1)
    assert not out.exists()


# ---------------------------------------------------------------------------- errors: each its own, nothing written
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("missing", r"missing 1 tensor\(s\) in the checkpoint: layer42\.0\.1\.bn2\.running_var "
                    r"\(igoas suppression_stage4\.1\.bn2\.running_var\) \(512,\)"),
        ("extra", r"1 tensor\(s\) with no igoas counterpart: layer5\.weight \(3,\)"),
        ("shape", r"att1\.fc1\.weight \(igoas suppression_cbam\.fc1\.weight\): checkpoint \(32, 1024, 1, 1\) "
                  r"vs igoas network \(64, 1024, 1, 1\)"),
    ],
)
def test_mismatched_checkpoints_are_refused_naming_the_key(
    change: str, expected: str, official_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    state = dict(official_state)
    if change == "missing":
        del state["layer42.0.1.bn2.running_var"]
    elif change == "extra":
        state["layer5.weight"] = torch.zeros(3)
    else:
        state["att1.fc1.weight"] = torch.zeros(32, 1024, 1, 1)
    path, out = tmp_path / "bad.pth.tar", tmp_path / "out" / "imported.pth"
    torch.save({"state_dict": state, "epoch": 1, "rank1": 0.1}, path)
    with pytest.raises(CheckpointError, match=expected) as raised:
        import_official(path, out=out)
    assert str(path) in str(raised.value)
    assert not out.exists() and not out.parent.exists()


def test_truncated_file_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    path, out = tmp_path / "model.pth.tar-8", tmp_path / "out.pth"
    torch.save({"state_dict": {"classifier1.weight": torch.randn(7, 512)}, "epoch": 8}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated") as raised:
        import_official(path, out=out)
    assert str(path) in str(raised.value) and not out.exists()


def test_pickle_bearing_file_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    path, out = tmp_path / "with_args.pth.tar", tmp_path / "out.pth"
    torch.save({"state_dict": {"classifier1.weight": torch.randn(7, 512)}, "args": argparse.Namespace(lr=3e-4)}, path)
    with pytest.raises(CheckpointError, match="refused") as raised:
        import_official(path, out=out)
    assert str(path) in str(raised.value) and not out.exists()


def test_numpy_rank1_loads_but_numpy_arrays_stay_refused(tmp_path: Path) -> None:
    scalar_file = tmp_path / "legacy.pth.tar"
    torch.save({"state_dict": {"classifier1.weight": torch.ones(2, 512)}, "rank1": np.float32(0.5)}, scalar_file,
               _use_new_zipfile_serialization=False)
    # The name a file written under numpy 1 (the authors' setup) gives the scalar constructor.
    raw = scalar_file.read_bytes()
    assert b"numpy._core.multiarray\nscalar" in raw
    scalar_file.write_bytes(raw.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"))
    _, record = read_official_checkpoint(scalar_file)
    assert record["rank1"] == 0.5 and type(record["rank1"]) is float

    array_file = tmp_path / "array.pth.tar"
    torch.save({"state_dict": {"classifier1.weight": torch.ones(2, 512)}, "cmc": np.ones(3)}, array_file)
    with pytest.raises(CheckpointError, match="refused"):
        read_official_checkpoint(array_file)


def test_files_without_the_authors_network_are_explained(tmp_path: Path) -> None:
    other = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"conv1.weight": torch.ones(1)}}, other)
    with pytest.raises(CheckpointError, match="classifier1.weight"):
        import_official(other)
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.ones(1)], not_a_dict)
    with pytest.raises(CheckpointError, match="no state dict"):
        import_official(not_a_dict)
    ours = tmp_path / "ours.pth"
    save_checkpoint(ours, {"model_spec": {}, "model": {}})
    with pytest.raises(CheckpointError, match="already an igoas checkpoint"):
        import_official(ours)


# ---------------------------------------------------------------------------- command line
@pytest.mark.slow
def test_cli_import_and_export(
    official_file: Path, official_state: dict[str, torch.Tensor], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "imported.pth"
    assert main(["import-official", str(official_file), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "702 identities" in printed and "epoch 60" in printed and str(out) in printed
    assert "expects 384x128 (height x width) RGB input" in printed
    assert load_checkpoint(out)["source"]["format"] == "torchreid"

    exported = tmp_path / "model-best.pth.tar"
    assert main(["export-official", str(out), "--out", str(exported), "--epoch", "61"]) == 0
    assert "load_weights" in capsys.readouterr().out
    content = torch.load(exported, weights_only=True)
    assert content["epoch"] == 61 and content["rank1"] == pytest.approx(0.601)
    # Back in the authors' layout, without `module.`: the very tensors of the original file.
    assert content["state_dict"].keys() == official_state.keys()
    assert all(torch.equal(content["state_dict"][key], value) for key, value in official_state.items())


def test_cli_errors_are_one_line_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken, out = tmp_path / "broken.pth.tar", tmp_path / "out.pth"
    broken.write_bytes(b"PK\x03\x04 not really a checkpoint")
    assert main(["import-official", str(broken), "--out", str(out)]) != 0
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(broken) in error and "Traceback" not in error

    small = tmp_path / "small.pth"
    save_checkpoint(small, {"model_spec": {"name": "baseline", "num_classes": 3, "backbone": "resnet18",
                                           "options": {}}, "model": {}})
    assert main(["export-official", str(small), "--out", str(out)]) != 0
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "baseline" in error
    assert not out.exists()

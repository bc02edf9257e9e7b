"""benchmarks/inference.py on the CPU with a tiny network: the rows it times on CUDA (the
network on device batches, end to end apart), failures reported per path, the document
rewritten after every path (the timings here mean nothing)."""
from __future__ import annotations

import json

import pytest
import torch

from test_benchmark_train_step import load_script

TINY = ["--backbone", "resnet18", "--height", "64", "--width", "32", "--images", "4", "--batch-size", "2",
        "--repeats", "1", "--calibration-images", "8", "--pytorch-only", "--budget-s", "1e6"]


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):
    return load_script("inference", monkeypatch)


def _models(bench):
    torch.manual_seed(0)
    network = bench.build_model("igoas", num_classes=4, backbone="resnet18")
    return bench.reid_models(network, bench.Preprocess(64, 32), "cpu", pytorch_only=True)


def test_cuda_rows_time_device_batches_and_keep_end_to_end_apart(bench, monkeypatch) -> None:
    models = _models(bench)
    args = bench.parse_args(TINY + ["--device", "cuda"])
    assert (args.images, args.batch_size) == (4, 2) and bench.parse_args(["--device", "cuda"]).images == 512
    monkeypatch.setattr(bench, "is_cuda", lambda device: True)
    embedders = {name: bench.embedder(model, args.batch_size) for name, model in models.items()}
    images = torch.randint(0, 256, (4, 3, 64, 32), dtype=torch.uint8)
    rows = bench.timed_rows(models, embedders, images, bench.parse_args(TINY))
    assert list(rows) == ["pytorch_auto", "pytorch_fp32", "pytorch_fp32_channels_last",
                          "pytorch_auto_end_to_end", "pytorch_fp32_end_to_end"]
    # the device row runs the network alone on normalised batches: the same embeddings as `embed`
    step = bench.on_device(models["pytorch_fp32"], images, batch_size=2)()
    expected = torch.from_numpy(models["pytorch_fp32"].embed(images))
    assert torch.allclose(torch.nn.functional.normalize(step(), dim=1), expected, atol=1e-5)
    assert rows["pytorch_fp32"]()["images_per_s"] > 0


@pytest.mark.slow
def test_a_failing_path_is_reported_and_every_row_saved(bench, monkeypatch, tmp_path, capsys) -> None:
    def fails(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    real = bench.images_per_second
    monkeypatch.setattr(bench, "images_per_second",
                        lambda embed, images, repeats: fails() if embed is broken[0] else real(embed, images, repeats))
    broken = []
    real_embedder = bench.embedder

    def embedder(model, batch_size):
        embed = real_embedder(model, batch_size)
        if not broken:
            broken.append(embed)  # the first path: pytorch_auto
        return embed

    monkeypatch.setattr(bench, "embedder", embedder)
    report = bench.main(TINY + ["--out", str(tmp_path)])
    saved = json.loads((tmp_path / "inference.json").read_text())
    assert saved["finished"] and set(saved["images_per_s"]) == {"pytorch_fp32", "pytorch_fp32_channels_last"}
    assert saved["skipped"] == [{"path": "pytorch_auto",
                                 "reason": "failed: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"}]
    assert report["ratio_vs_fp32"]["pytorch_fp32"] == 1.0
    assert saved["min_cosine_vs_fp32"]["pytorch_fp32_channels_last"] == pytest.approx(1.0, abs=1e-5)
    assert json.loads(capsys.readouterr().out)["images_per_s"] == saved["images_per_s"]


def test_a_killed_run_keeps_the_rows_it_measured(bench, monkeypatch, tmp_path) -> None:
    calls = []

    def images_per_second(embed, images, repeats):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return 10.0 * len(calls)

    monkeypatch.setattr(bench, "images_per_second", images_per_second)
    with pytest.raises(KeyboardInterrupt):
        bench.main(TINY + ["--out", str(tmp_path / "inference.json")])
    saved = json.loads((tmp_path / "inference.json").read_text())
    assert saved["images_per_s"] == {"pytorch_auto": 10.0, "pytorch_fp32": 20.0}
    assert saved["ratio_vs_fp32"] == {"pytorch_auto": 0.5, "pytorch_fp32": 1.0} and not saved["finished"]

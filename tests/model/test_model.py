"""The IGOAS network: architecture fidelity, data flow, options, pretrained weights."""
from __future__ import annotations

import pytest
import torch
import torchvision
import torch.nn.functional as F
from torch import nn

from igoas.utils.errors import CheckpointError, ConfigError
from igoas.model.losses import LossConfig, compute_losses
from igoas.model import MODEL_BUILDERS, IGOASOutput, build_model
from igoas.model.occlusion import build_occlusion

IGOAS_CHILDREN = ["stem", "layer1", "layer2", "layer3", "global_stage4", "global_bottleneck", "suppression_cbam",
                  "suppression_stage4", "suppression_bottleneck", "osm", "global_reduction",
                  "suppression_reduction", "global_classifier", "suppression_classifier", "concat_classifier"]
BASELINE_CHILDREN = ["stem", "layer1", "layer2", "layer3", "global_stage4", "global_bottleneck",
                     "global_reduction", "global_classifier"]


def _tiny(name: str = "igoas", classes: int = 6, **options) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, classes, backbone="resnet18", **options)


def _images(batch: int = 4, seed: int = 0, size: tuple[int, int] = (64, 32)) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ ResNet-50 fidelity (meta tensors: no compute)
@pytest.mark.parametrize("classes, expected", [(702, 51_596_640), (751, 51_697_139)])
def test_parameter_count_matches_authors_code(classes: int, expected: int) -> None:
    with torch.device("meta"):
        model = build_model("igoas", classes)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_resnet50_map_sizes_at_384x128() -> None:
    with torch.device("meta"):
        model = build_model("igoas", 702)
        maps = model.eval().feature_maps(torch.empty(2, 3, 384, 128))
        out = model.train()(torch.empty(2, 3, 384, 128), 10.0)
    assert maps["global"].shape == maps["suppression"].shape == (2, 2048, 24, 8)
    assert out.attention.shape == out.global_map.shape == (2, 2048, 24, 8)
    assert out.visible_mask.shape == (2, 1, 24, 8)
    cbam = model.osm.cbam
    assert (cbam.fc1.weight.shape, cbam.fc2.weight.shape) == ((128, 2048, 1, 1), (2048, 128, 1, 1))
    assert model.suppression_cbam.fc1.weight.shape == (64, 1024, 1, 1)
    assert cbam.conv_after_concat.weight.shape == (1, 2, 3, 3) and cbam.conv_after_concat.bias is not None


def test_child_modules_and_fixbase_names() -> None:
    with torch.device("meta"):
        model = build_model("igoas", 10)
        baseline = build_model("baseline", 10)
        lean = build_model("igoas", 10, extra_bottleneck=False, pre_stage4_cbam=False)
    assert [n for n, _ in model.named_children()] == IGOAS_CHILDREN
    assert [n for n, _ in baseline.named_children()] == BASELINE_CHILDREN
    assert model.fixbase_modules == ("global_bottleneck", "suppression_bottleneck", "suppression_cbam", "osm",
                                     "global_reduction", "suppression_reduction", "global_classifier",
                                     "suppression_classifier")
    assert "concat_classifier" not in model.fixbase_modules
    assert baseline.fixbase_modules == ("global_bottleneck", "global_reduction", "global_classifier")
    assert {"global_bottleneck", "suppression_bottleneck", "suppression_cbam"}.isdisjoint(dict(lean.named_children()))
    assert all(isinstance(model.stem[i], t) for i, t in enumerate([nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]))
    assert (model.feature_dim, baseline.feature_dim) == (1024, 512)
    # occlusion methods hold no tensors: the state dict is exactly the layers'
    assert all(key.split(".")[0] in IGOAS_CHILDREN for key in model.state_dict())


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_stage4_copies_are_stride_one_separate_and_equal_at_start(backbone: str) -> None:
    with torch.device("meta"):
        model = build_model("igoas", 10, backbone=backbone)
    for stage in (model.global_stage4, model.suppression_stage4):
        first = stage[0]
        conv = first.conv2 if backbone == "resnet50" else first.conv1
        assert conv.stride == (1, 1) and first.downsample[0].stride == (1, 1)
    ids_global = {id(p) for p in model.global_stage4.parameters()}
    assert ids_global.isdisjoint(id(p) for p in model.suppression_stage4.parameters())
    # every parameter belongs to exactly one child
    all_params = list(model.parameters())
    assert len({id(p) for p in all_params}) == len(all_params)


def test_stage4_copies_start_from_the_same_weights() -> None:
    model = _tiny()
    for (name, a), (_, b) in zip(model.global_stage4.state_dict().items(),
                                 model.suppression_stage4.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        model.global_stage4[0].conv1.weight.add_(1.0)
    assert not torch.equal(model.global_stage4[0].conv1.weight, model.suppression_stage4[0].conv1.weight)


def test_authors_initialisation_of_heads() -> None:
    model = build_model("igoas", 700, backbone="resnet18")
    bn = model.global_reduction[1]
    with torch.no_grad():
        assert abs(float(bn.weight.mean()) - 1.0) < 0.01 and 0.01 < float(bn.weight.std()) < 0.03
        assert float(model.global_reduction[0].bias.abs().sum()) == 0.0
        for head in (model.global_classifier, model.suppression_classifier, model.concat_classifier):
            assert 0.008 < float(head.weight.std()) < 0.012 and float(head.bias.abs().sum()) == 0.0
    assert model.concat_classifier.in_features == 1024


# ------------------------------------------------------------------ data flow
def _record_inputs(module: nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    module.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].detach().clone()))
    return seen


def test_training_forward_occludes_only_the_suppression_half() -> None:
    model = _tiny().train()
    stem_inputs, layer3_inputs = _record_inputs(model.stem), _record_inputs(model.layer3)
    images = _images()
    out = model(images, 20.0, torch.Generator().manual_seed(0))
    assert isinstance(out, IGOASOutput)
    assert len(stem_inputs) == len(layer3_inputs) == 1, "stages 1-3 must run once, on both halves together"
    batch_in = stem_inputs[0]
    assert batch_in.shape[0] == 8
    assert torch.equal(batch_in[:4], images)
    expected, mask = _igo_reference(images)
    assert torch.equal(batch_in[4:], expected)
    assert {k: v.shape for k, v in out.logits.items()} == {k: (4, 6) for k in ("global", "suppression", "concat")}
    assert out.features["global"].shape == out.features["suppression"].shape == (4, 512)
    assert out.attention.shape == out.global_map.shape == (4, 512, 4, 2)
    assert out.visible_mask.shape == (4, 1, 4, 2)
    assert out.occluded_fraction == pytest.approx(1 - float(mask.mean()))
    assert out.use_mask_loss


def _igo_reference(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return build_occlusion("igo")(images, 20.0, torch.Generator().manual_seed(0))


def test_feature_level_dropblock_drops_before_the_extra_block_so_the_mask_loss_acts() -> None:
    model = _tiny(occlusion="batch_dropblock").train()
    layer3_inputs = _record_inputs(model.layer3)
    block_inputs = _record_inputs(model.suppression_bottleneck)
    out = model(_images(), 0.0, torch.Generator().manual_seed(1))
    assert layer3_inputs[0].shape[0] == 4, "feature-level occlusion should not duplicate the batch"
    hidden = out.visible_mask.expand_as(out.attention) == 0
    assert hidden.any() and (block_inputs[0][hidden] == 0).all(), "the band is dropped from the stage-4 output"
    assert (out.attention[hidden] != 0).any(), "the OSM must see features to suppress in the band"
    assert compute_losses(out, torch.tensor([0, 1, 2, 3])).terms["mask_suppression"] > 0
    assert (out.global_map.abs().sum(dim=1) > 0).all(), "global branch must not be dropped"


def test_baseline_applies_its_occlusion_to_the_global_branch() -> None:
    images = _images()
    model = _tiny("baseline", occlusion="random_erasing").train()
    stem_inputs = _record_inputs(model.stem)
    out = model(images, 0.0, torch.Generator().manual_seed(0))
    assert set(out.logits) == {"global"} and out.attention is None and not out.use_mask_loss
    assert stem_inputs[0].shape[0] == 4 and not torch.equal(stem_inputs[0], images)
    plain = _tiny("baseline").train()
    assert plain.spec["name"] == "baseline" and plain.occlusion.level == "input"
    assert compute_losses(out, torch.tensor([0, 1, 2, 3])).terms.keys() == {"id_global"}


def test_no_osm_variant_has_igoas_layers_but_no_mask_loss() -> None:
    full, no_osm = _tiny(), _tiny("igoas_no_osm")
    assert full.state_dict().keys() == no_osm.state_dict().keys()
    out = no_osm.train()(_images(), 10.0)
    assert not out.use_mask_loss and out.attention is not None
    assert not any(k.startswith("mask") for k in compute_losses(out, torch.tensor([0, 1, 2, 3])).terms)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_global_max_pool_matches_the_adaptive_pool_with_ties(dtype: torch.dtype) -> None:
    from igoas.model.heads import global_max_pool

    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (4, 8, 6, 3), generator=generator).to(dtype)  # many ties
    for layout in (torch.contiguous_format, torch.channels_last):
        ours, reference = (x.contiguous(memory_format=layout).clone().requires_grad_() for _ in range(2))
        weights = torch.randn(4, 8, 1, 1, generator=generator).to(dtype)
        (global_max_pool(ours) * weights).sum().backward()
        (F.adaptive_max_pool2d(reference, 1) * weights).sum().backward()
        assert torch.equal(global_max_pool(ours), F.adaptive_max_pool2d(reference, 1))
        assert torch.equal(ours.grad, reference.grad)


def test_training_graph_avoids_ops_without_a_deterministic_cuda_backward() -> None:
    out = _tiny().train()(_images(), 10.0)
    seen, stack = set(), [compute_losses(out, torch.tensor([0, 1, 2, 3])).total.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(parent for parent, _ in node.next_functions)
    names = {type(node).__name__ for node in seen}
    assert "MaxBackward0" in names or "MaxBackward1" in names  # the max pooling is in the graph
    assert not {name for name in names if name.startswith("AdaptiveMaxPool")}


def test_eval_embedding_is_normalised_and_deterministic() -> None:
    model = _tiny().eval()
    images = _images(size=(32, 16))
    with torch.no_grad():
        first, second = model(images), model(images)
        baseline = _tiny("baseline").eval()(images)
    assert first.shape == (4, 1024) and baseline.shape == (4, 512)
    assert torch.allclose(first[:, :512].norm(dim=1), torch.ones(4))
    assert torch.allclose(first[:, 512:].norm(dim=1), torch.ones(4))
    assert torch.allclose(baseline.norm(dim=1), torch.ones(4))
    assert torch.equal(first, second)


def test_one_optimisation_step_lowers_the_loss() -> None:
    model = _tiny(classes=4).train()
    images, labels = _images(8), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def losses():
        out = model(images, 60.0, torch.Generator().manual_seed(0))  # same rectangle each time
        return compute_losses(out, labels, LossConfig())

    before = losses()
    assert before.terms["mask_suppression"] > 0 and before.terms["mask_global"] > 0
    optimizer.zero_grad()
    before.total.backward()
    assert all(p.grad is not None for p in model.parameters()), "some parameter gets no gradient"
    optimizer.step()
    with torch.no_grad():
        after = losses()
    assert after.total.item() < before.total.item()


# ------------------------------------------------------------------ options and errors
def test_spec_rebuilds_the_same_architecture() -> None:
    model = _tiny(cbam_spatial_kernel=7, occlusion="slow_dropblock", occlusion_options={"period": 4})
    again = build_model(**model.spec)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert again.osm.cbam.conv_after_concat.kernel_size == (7, 7)
    assert again.occlusion.period == 4
    assert set(MODEL_BUILDERS) >= {"igoas", "igoas_no_osm", "baseline"}


@pytest.mark.parametrize("kwargs, message", [({"name": "pcb"}, "unknown model"),
                                             ({"backbone": "vgg16"}, "unknown backbone"),
                                             ({"attention": True}, "unknown model option"),
                                             ({"mask_resize": "cubic"}, "unknown mask_resize"),
                                             ({"occlusion": "cutout"}, "unknown occlusion"),
                                             ({"num_classes": 0}, "num_classes")])
def test_build_model_errors(kwargs: dict, message: str) -> None:
    arguments = {"name": "igoas", "num_classes": 5, "backbone": "resnet18", **kwargs}
    with torch.device("meta"), pytest.raises(ConfigError, match=message):
        build_model(**arguments)


# ------------------------------------------------------------------ pretrained weights
@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    return path, reference


def test_local_torchvision_weights_load_into_both_stage4_copies(resnet18_file) -> None:
    path, reference = resnet18_file
    model = build_model("igoas", 5, pretrained=str(path), backbone="resnet18")
    assert torch.equal(model.stem[0].weight, reference.conv1.weight)
    assert torch.equal(model.layer3[1].bn2.running_var, reference.layer3[1].bn2.running_var)
    for stage in (model.global_stage4, model.suppression_stage4):
        for key, value in reference.layer4.state_dict().items():
            assert torch.equal(stage.state_dict()[key], value), key
    assert "pretrained" not in model.spec["options"]


def test_timm_style_wrapped_weights_load(resnet18_file, tmp_path) -> None:
    path, reference = resnet18_file
    state = {f"module.{k}": v for k, v in torch.load(path, weights_only=True).items()}
    wrapped = tmp_path / "timm.pth.tar"
    torch.save({"state_dict": state, "epoch": 3}, wrapped)
    model = build_model("baseline", 5, pretrained=wrapped, backbone="resnet18")
    assert torch.equal(model.global_stage4[0].conv1.weight, reference.layer4[0].conv1.weight)


def test_mismatched_weights_list_keys(resnet18_file, tmp_path) -> None:
    path, _ = resnet18_file
    state = torch.load(path, weights_only=True)
    del state["layer2.0.conv1.weight"]
    state["head.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(CheckpointError, match=r"layer2\.0\.conv1\.weight.*head\.weight"):
        build_model("igoas", 5, pretrained=broken, backbone="resnet18")
    with pytest.raises(CheckpointError, match="wrong shapes|missing keys"):
        build_model("igoas", 5, pretrained=path, backbone="resnet34")
    with pytest.raises(CheckpointError, match="does not exist"):
        build_model("igoas", 5, pretrained=tmp_path / "nope.pth", backbone="resnet18")


def test_download_failure_explains_how_to_use_a_local_file(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights.DEFAULT.__class__, "get_state_dict", offline)
    with pytest.raises(CheckpointError) as info:
        build_model("igoas", 5, pretrained=True, backbone="resnet18")
    message = str(info.value)
    assert "network is unreachable" in message and "pretrained=" in message
    assert torch.hub.get_dir() in message


def test_cbam_follows_its_definition() -> None:
    from igoas.model.cbam import CBAM

    torch.manual_seed(0)
    cbam = CBAM(32, reduction=16, spatial_kernel=3)
    x = torch.rand(2, 32, 6, 4)

    def mlp(v: torch.Tensor) -> torch.Tensor:
        return cbam.fc2(torch.relu(cbam.fc1(v)))

    channel = torch.sigmoid(mlp(x.mean(dim=(2, 3), keepdim=True)) + mlp(x.amax(dim=(2, 3), keepdim=True)))
    y = x * channel
    spatial = torch.sigmoid(cbam.conv_after_concat(torch.cat([y.mean(1, keepdim=True), y.amax(1, keepdim=True)], 1)))
    assert torch.allclose(cbam(x), y * spatial, atol=1e-6)
    assert cbam.fc1.weight.shape == (2, 32, 1, 1) and cbam.fc1.bias is not None


def test_mask_resize_modes() -> None:
    from igoas.model.osm import resize_mask

    mask = torch.ones(1, 1, 8, 4)
    mask[:, :, 2:6] = 0
    feature_map = torch.zeros(1, 3, 4, 2, dtype=torch.bfloat16)
    bilinear = resize_mask(mask, feature_map)
    assert bilinear.dtype == torch.float32 and bilinear.shape == (1, 1, 4, 2)
    assert torch.equal(bilinear, F.interpolate(mask, size=(4, 2), mode="bilinear", align_corners=True))
    assert torch.equal(resize_mask(mask, feature_map, "area")[0, 0, :, 0], torch.tensor([1.0, 0.0, 0.0, 1.0]))

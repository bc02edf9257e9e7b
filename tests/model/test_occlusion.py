"""The IGO block and the comparison occlusion methods: schedule, geometry, fill, masks, RNG."""
from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from igoas.utils.errors import ConfigError, IgoasError
from igoas.model.occlusion import (IMAGENET_MEAN, IMAGENET_STD, OCCLUSION_METHODS, build_occlusion, igo_area_ratio)

INPUT_METHODS = [name for name in OCCLUSION_METHODS if name != "batch_dropblock"]


def _batch(batch: int = 4, height: int = 96, width: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _box(mask2d: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the zero region of a 2-d mask, which must be a rectangle."""
    rows = (mask2d == 0).any(dim=1).nonzero().flatten()
    cols = (mask2d == 0).any(dim=0).nonzero().flatten()
    top, left = int(rows[0]), int(cols[0])
    height, width = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
    assert (mask2d[top:top + height, left:left + width] == 0).all(), "occluded region is not a full rectangle"
    assert int((mask2d == 0).sum()) == height * width
    return top, left, height, width


def _pixel_fill_bounds() -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    return (0 - mean) / std, (1 - mean) / std


# ------------------------------------------------------------------ schedule
@pytest.mark.parametrize("epoch, expected", [(0, 0.1), (30, 0.1 + 0.4 * 30 / 90), (55, 0.1 + 0.4 * 55 / 90),
                                             (56, 1 / 3), (89, 1 / 3)])
def test_igo_schedule_values(epoch: int, expected: float) -> None:
    assert igo_area_ratio(epoch) == pytest.approx(expected)


@pytest.mark.parametrize("epochs, fits", [(90, True), (56, True), (55, False), (30, False), (1, False)])
def test_igo_schedule_warning_names_the_scaled_options(epochs: int, fits: bool) -> None:
    warning = build_occlusion("igo").schedule_warning(epochs)
    assert (warning is None) == fits
    if not fits:
        assert f"model.occlusion_options.slope={0.4 / epochs:.6g}" in warning
        assert f"ramp_epochs={round(56 * epochs / 90) - 1}" in warning


def test_scaled_igo_schedules_and_fixed_igo_fit_their_runs() -> None:
    # the shipped scaled schedules: 20 epochs (study), 6 (demo), 2 (quick demo)
    for epochs, ramp in [(20, 11), (6, 3), (2, 0), (1, 0)]:  # (1, 0): the suggested ramp fits too
        assert build_occlusion("igo", slope=0.4 / epochs, ramp_epochs=ramp).schedule_warning(epochs) is None
    assert build_occlusion("igo_fixed").schedule_warning(2) is None


def test_igo_schedule_granularity() -> None:
    # per epoch: constant within an epoch; per iteration: grows within it
    assert igo_area_ratio(30.7) == pytest.approx(igo_area_ratio(30))
    assert igo_area_ratio(30.5, granularity="iteration") == pytest.approx(0.1 + 0.4 * 30.5 / 90)
    assert igo_area_ratio(55.9, granularity="iteration") > igo_area_ratio(55)
    assert igo_area_ratio(56.0, granularity="iteration") == pytest.approx(1 / 3)
    assert igo_area_ratio(10, start=0.2, slope=0.01, ramp_epochs=5, final=0.5) == 0.5
    with pytest.raises(ConfigError):
        igo_area_ratio(1.0, granularity="minute")


# ------------------------------------------------------------------ IGO
def test_igo_rectangle_shared_constant_fill_and_exact_mask() -> None:
    images = _batch()
    before = images.clone()
    occluded, mask = build_occlusion("igo", fill="pixel")(images, 40.0, torch.Generator().manual_seed(3))
    assert torch.equal(images, before), "input modified in place"
    assert mask.shape == (4, 1, 96, 32) and mask.dtype == images.dtype
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    top, left, height, width = _box(mask[0, 0])
    assert torch.equal(mask, mask[:1].expand_as(mask)), "rectangle differs across the batch"
    assert top >= 0 and left >= 0 and top + height <= 96 and left + width <= 32
    target = igo_area_ratio(40.0) * 96 * 32
    assert abs(height * width - target) <= height + width + 1  # rounding of each side
    visible = mask.expand_as(images).bool()
    assert torch.equal(occluded[visible], images[visible])
    region = occluded[:, :, top:top + height, left:left + width]
    colour = region[0, :, 0, 0]
    assert torch.equal(region, colour.view(1, 3, 1, 1).expand_as(region)), "fill is not one colour per channel"
    low, high = _pixel_fill_bounds()
    assert ((colour >= low - 1e-6) & (colour <= high + 1e-6)).all()


def test_igo_default_fill_is_authors_uniform_in_normalised_space() -> None:
    """The default is the authors' code: U(0, 1) per channel written into the normalised tensor."""
    assert build_occlusion("igo").fill == "normalized"
    colours = []
    for seed in range(40):
        occluded, mask = build_occlusion("igo")(_batch(2), 5.0, torch.Generator().manual_seed(seed))
        top, left, _, _ = _box(mask[0, 0])
        colours.append(occluded[0, :, top, left])
        assert torch.equal(occluded[1, :, top, left], colours[-1]), "one colour for the whole batch"
    colours = torch.stack(colours)
    assert ((colours >= 0) & (colours <= 1)).all()
    # 40 draws per channel of U(0, 1): below 0.2 and above 0.8 both occur (the pixel fill's
    # normalised range is about -2.1..2.6, so it would leave [0, 1] here)
    assert (colours.min(dim=0).values < 0.2).all() and (colours.max(dim=0).values > 0.8).all()


def _igo_boxes(progress: float, draws: int) -> list[tuple[int, int]]:
    """(height, width) of the box IGO hides in a 384 x 128 image, one per seed."""
    images, igo = torch.zeros(1, 3, 384, 128), build_occlusion("igo")
    return [_box(igo(images, progress, torch.Generator().manual_seed(seed))[1][0, 0])[2:] for seed in range(draws)]


def test_igo_late_training_occluder_is_a_full_width_third() -> None:
    assert _igo_boxes(70.0, 3) == [(128, 128)] * 3


def test_igo_rejects_aspects_that_do_not_fit() -> None:
    for height, width in _igo_boxes(30.0, 20):
        assert width <= 128 and height <= 384
        assert 0.5 - 0.05 <= height / width <= 1.0 + 0.05


def test_igo_band_when_rectangle_wider_than_image() -> None:
    _, mask = build_occlusion("igo_fixed", area_ratio=0.6)(torch.zeros(1, 3, 60, 20), 0.0)
    _, left, height, width = _box(mask[0, 0])
    assert (left, width, height) == (0, 20, 36)


def test_igo_impossible_rectangle_raises_clear_error() -> None:
    with pytest.raises(IgoasError, match="IGO cannot place"):
        build_occlusion("igo_fixed", area_ratio=1.5)(_batch(), 0.0)
    with pytest.raises(IgoasError, match="aspect"):
        build_occlusion("igo_fixed", area_ratio=0.3, aspect_range=(0.01, 0.02), max_attempts=50)(_batch(), 0.0)


def test_igo_fixed_ignores_progress() -> None:
    igo = build_occlusion("igo_fixed", area_ratio=0.25)
    areas = {int((igo(_batch(1), progress)[1] == 0).sum()) for progress in (0.0, 30.0, 80.0)}
    assert all(abs(a - 0.25 * 96 * 32) <= 96 + 32 for a in areas)


@settings(max_examples=30, deadline=None)
@given(height=st.integers(16, 200), width=st.integers(8, 80), progress=st.floats(0, 120), seed=st.integers(0, 1000))
def test_igo_rectangle_always_inside_and_near_target_area(height: int, width: int, progress: float,
                                                          seed: int) -> None:
    igo = build_occlusion("igo")
    rect = igo.rectangle(height, width, progress, torch.Generator().manual_seed(seed))
    assert 0 <= rect.top and rect.top + rect.height <= height
    assert 0 <= rect.left and rect.left + rect.width <= width
    target = igo.area_ratio(progress) * height * width
    assert abs(rect.area - target) <= rect.height + rect.width + 1


# ------------------------------------------------------------------ comparison methods
def test_random_erasing_is_per_image_with_mean_fill() -> None:
    images = _batch(8)
    occluded, mask = build_occlusion("random_erasing")(images, 0.0, torch.Generator().manual_seed(0))
    boxes = [_box(mask[i, 0]) for i in range(8)]
    assert len(set(boxes)) > 1, "every image got the same rectangle"
    for i, (top, left, height, width) in enumerate(boxes):
        assert 0.25 * 96 * 32 - 96 <= height * width <= 0.5 * 96 * 32 + 96
        # ImageNet mean colour is 0 after normalisation
        assert (occluded[i, :, top:top + height, left:left + width] == 0).all()
        assert torch.equal(occluded[i] * mask[i], images[i] * mask[i])


def test_random_erasing_probability_zero_keeps_images() -> None:
    images = _batch()
    occluded, mask = build_occlusion("random_erasing", probability=0.0)(images, 0.0)
    assert torch.equal(occluded, images) and (mask == 1).all()


def test_random_erasing_random_fill_varies_per_pixel() -> None:
    occluded, mask = build_occlusion("random_erasing", fill="random")(_batch(1), 0.0, torch.Generator().manual_seed(0))
    top, left, height, width = _box(mask[0, 0])
    region = occluded[0, :, top:top + height, left:left + width]
    assert region.flatten(1).std(dim=1).min() > 0.1
    low, high = _pixel_fill_bounds()
    assert ((region >= low.view(3, 1, 1) - 1e-6) & (region <= high.view(3, 1, 1) + 1e-6)).all()


@pytest.mark.parametrize("method", ["random_erasing", "batch_random_erasing"])
def test_erasing_authors_fill_writes_their_constants_into_the_normalised_tensor(method: str) -> None:
    images = _batch()
    occluded, mask = build_occlusion(method, fill="normalized")(images, 0.0, torch.Generator().manual_seed(4))
    top, left, height, width = _box(mask[0, 0])
    region = occluded[0, :, top:top + height, left:left + width]
    expected = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1).expand_as(region)
    assert torch.equal(region, expected)


def test_random_erasing_authors_mask_is_all_visible() -> None:
    images = _batch()
    erasing = build_occlusion("random_erasing", mask="all_visible")
    occluded, mask = erasing(images, 0.0, torch.Generator().manual_seed(0))
    assert (mask == 1).all() and mask.shape == (4, 1, 96, 32)
    assert not torch.equal(occluded, images) and erasing.occluded_fraction > 0.2
    with pytest.raises(ConfigError, match="mask"):
        build_occlusion("random_erasing", mask="none")


def test_fixed_igo_authors_variant_draws_its_area_per_batch() -> None:
    igo = build_occlusion("igo_fixed", area_range=[0.25, 0.333])
    areas = set()
    for seed in range(30):
        _, mask = igo(torch.zeros(2, 3, 384, 128), 0.0, torch.Generator().manual_seed(seed))
        _, _, height, width = _box(mask[0, 0])
        assert torch.equal(mask[0], mask[1])
        areas.add(height * width)
        assert 0.25 * 384 * 128 - 384 <= height * width <= 0.333 * 384 * 128 + 384
    assert len(areas) > 10, "the area is not drawn per batch"
    fixed = build_occlusion("igo_fixed")
    for seed in range(5):
        _, mask = fixed(torch.zeros(1, 3, 384, 128), 0.0, torch.Generator().manual_seed(seed))
        assert _box(mask[0, 0])[2:] == (128, 128)
    with pytest.raises(ConfigError, match="area_range"):
        build_occlusion("igo_fixed", area_range=[0.5, 0.25])


def test_batch_random_erasing_is_shared_with_mean_fill() -> None:
    images = _batch()
    occluded, mask = build_occlusion("batch_random_erasing")(images, 0.0, torch.Generator().manual_seed(2))
    assert torch.equal(mask, mask[:1].expand_as(mask))
    top, left, height, width = _box(mask[0, 0])
    assert 0.25 * 96 * 32 - 96 <= height * width <= 0.5 * 96 * 32 + 96
    assert (occluded[:, :, top:top + height, left:left + width] == 0).all()


def test_batch_dropblock_acts_on_feature_maps() -> None:
    method = build_occlusion("batch_dropblock")
    assert method.level == "feature"
    features = torch.rand(4, 16, 24, 8) + 0.1
    dropped, mask = method(features, 0.0, torch.Generator().manual_seed(0))
    assert mask.shape == (4, 1, 24, 8)
    assert torch.equal(mask, mask[:1].expand_as(mask))
    _, left, height, width = _box(mask[0, 0])
    assert (left, width, height) == (0, 8, round(0.3 * 24))
    assert torch.equal(dropped, features * mask)


def test_slow_dropblock_holds_position_for_period_and_resumes_exactly() -> None:
    images = torch.zeros(2, 3, 384, 128)
    generator = torch.Generator().manual_seed(0)
    method = build_occlusion("slow_dropblock", period=3)
    assert method.level == "input"
    boxes = [_box(method(images, 0.0, generator)[1][0, 0]) for _ in range(9)]
    assert boxes[0] == boxes[1] == boxes[2] and boxes[3] == boxes[4] == boxes[5]
    assert len({boxes[0], boxes[3], boxes[6]}) > 1
    assert boxes[0][2:] == (round(0.3 * 384), 128)

    # exact resume: state and RNG saved after 4 calls reproduce calls 5..9
    generator = torch.Generator().manual_seed(0)
    method = build_occlusion("slow_dropblock", period=3)
    for _ in range(4):
        method(images, 0.0, generator)
    state, rng = json.loads(json.dumps(method.state_dict())), generator.get_state()
    resumed = build_occlusion("slow_dropblock", period=3)
    resumed.load_state_dict(state)
    generator = torch.Generator()
    generator.set_state(rng)
    assert [_box(resumed(images, 0.0, generator)[1][0, 0]) for _ in range(5)] == boxes[4:]


def test_none_returns_input_and_full_mask() -> None:
    images = _batch()
    occluded, mask = build_occlusion("none")(images, 10.0)
    assert torch.equal(occluded, images) and mask.shape == (4, 1, 96, 32) and (mask == 1).all()


@pytest.mark.parametrize("name", INPUT_METHODS)
def test_every_method_reproducible_and_leaves_input_alone(name: str) -> None:
    images = _batch()
    before = images.clone()
    first = build_occlusion(name)(images, 20.0, torch.Generator().manual_seed(7))
    second = build_occlusion(name)(images, 20.0, torch.Generator().manual_seed(7))
    assert torch.equal(images, before)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    torch.manual_seed(11)
    third = build_occlusion(name)(images, 20.0)
    torch.manual_seed(11)
    fourth = build_occlusion(name)(images, 20.0)
    assert torch.equal(third[1], fourth[1]), "global RNG fallback is not reproducible"


@pytest.mark.parametrize("name", ["igo", "batch_random_erasing", "random_erasing", "slow_dropblock"])
def test_seeds_change_the_occlusion(name: str) -> None:
    masks = {tuple(build_occlusion(name)(_batch(), 20.0, torch.Generator().manual_seed(s))[1].flatten().tolist())
             for s in range(4)}
    assert len(masks) > 1


def test_occluded_fraction_matches_mask() -> None:
    for name in INPUT_METHODS:
        method = build_occlusion(name)
        _, mask = method(_batch(), 30.0, torch.Generator().manual_seed(0))
        assert method.occluded_fraction == pytest.approx(1 - float(mask.mean()))


def test_build_occlusion_errors() -> None:
    with pytest.raises(ConfigError, match="unknown occlusion method"):
        build_occlusion("cutout")
    with pytest.raises(ConfigError, match="bad options"):
        build_occlusion("igo", colour="red")
    with pytest.raises(ConfigError):
        build_occlusion("igo", fill="noise")
    with pytest.raises(IgoasError, match="B x 3 x H x W"):
        build_occlusion("igo")(torch.zeros(2, 1, 32, 16), 0.0)
    assert math.isclose(build_occlusion("igo").area_ratio(0), 0.1)

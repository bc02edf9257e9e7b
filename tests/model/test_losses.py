"""Loss terms and their combination, on hand-made model outputs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from igoas.utils.errors import ConfigError
from igoas.model.losses import LossConfig, batch_hard_triplet, compute_losses, cross_entropy, mask_loss
from igoas.model import IGOASOutput


def _output(batch: int = 6, classes: int = 5, use_mask_loss: bool = True, seed: int = 0) -> IGOASOutput:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 1, 6, 4)
    mask[:, :, 2:4, :] = 0
    return IGOASOutput(
        logits={head: torch.randn(batch, classes, generator=g, requires_grad=True)
                for head in ("global", "suppression", "concat")},
        features={"global": torch.randn(batch, 8, generator=g, requires_grad=True),
                  "suppression": torch.randn(batch, 8, generator=g, requires_grad=True)},
        attention=torch.rand(batch, 4, 6, 4, generator=g, requires_grad=True),
        global_map=torch.rand(batch, 4, 6, 4, generator=g, requires_grad=True),
        visible_mask=mask, occluded_fraction=1 / 3, use_mask_loss=use_mask_loss)


LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


def _v(tensor: torch.Tensor) -> float:
    return tensor.detach().item()


def test_label_smoothed_cross_entropy_matches_definition() -> None:
    logits, labels, eps = torch.randn(4, 7), torch.tensor([1, 0, 6, 3]), 0.1
    target = (1 - eps) * F.one_hot(labels, 7) + eps / 7
    expected = (-target * logits.log_softmax(dim=1)).sum(dim=1).mean()
    assert cross_entropy(logits, labels, eps) == pytest.approx(_v(expected), rel=1e-6)


@pytest.mark.parametrize("form", ["channel_mean", "per_channel"])
def test_mask_loss_zero_when_region_is_zero_and_gradient_only_there(form: str) -> None:
    mask = torch.ones(2, 1, 6, 4)
    mask[:, :, 1:3, 1:3] = 0
    attention = torch.rand(2, 5, 6, 4) + 0.5
    assert _v(mask_loss(attention * mask, mask, form)) == 0.0
    attention.requires_grad_(True)
    loss = mask_loss(attention, mask, form)
    loss.backward()
    assert loss > 0
    assert (attention.grad * mask == 0).all(), "gradient touches the visible region"
    assert (attention.grad * (1 - mask)).abs().sum() > 0


def test_channel_mean_mask_loss_is_authors_mse() -> None:
    attention = torch.randn(3, 8, 6, 4)
    soft_mask = torch.rand(3, 1, 6, 4)  # bilinear resizing makes fractional values
    p = attention.mean(dim=1, keepdim=True)
    assert _v(mask_loss(attention, soft_mask)) == pytest.approx(_v(F.mse_loss(p, p * soft_mask)), rel=1e-5)


def test_adaptive_weights_sum_to_one_and_stay_in_the_graph() -> None:
    out = _output()
    result = compute_losses(out, LABELS, LossConfig(mask_loss_weight=0.0))
    ids = torch.stack([result.terms[f"id_{h}"] for h in ("global", "suppression", "concat")])
    assert _v(result.id_weights.detach().sum()) == pytest.approx(1.0)
    assert torch.allclose(result.id_weights, torch.softmax(ids, dim=0))
    assert _v(result.total) == pytest.approx(_v((torch.softmax(ids, 0) * ids).sum()), rel=1e-6)
    assert result.id_weights.requires_grad, "adaptive weights are detached"
    # the heavier loss gets the larger weight
    assert int(result.id_weights.argmax()) == int(ids.argmax())


def test_mean_weighting() -> None:
    result = compute_losses(_output(), LABELS, LossConfig(id_weighting="mean", mask_loss_weight=0.0))
    ids = [result.terms[f"id_{h}"] for h in ("global", "suppression", "concat")]
    assert torch.allclose(result.id_weights, torch.full((3,), 1 / 3))
    assert _v(result.total) == pytest.approx(_v(sum(ids) / 3), rel=1e-6)


def test_mask_terms_and_switches() -> None:
    out = _output()
    full = compute_losses(out, LABELS)
    assert {"mask_suppression", "mask_global"} <= full.terms.keys()
    ids = sum(w * full.terms[f"id_{h}"] for w, h in zip(full.id_weights, ("global", "suppression", "concat")))
    expected = ids + full.terms["mask_suppression"] + full.terms["mask_global"]
    assert _v(full.total) == pytest.approx(_v(expected), rel=1e-6)
    no_global = compute_losses(out, LABELS, LossConfig(mask_loss_global=False, mask_loss_weight=2.0))
    assert "mask_global" not in no_global.terms
    assert _v(no_global.total) == pytest.approx(_v(ids + 2 * full.terms["mask_suppression"]), rel=1e-6)
    without = compute_losses(_output(use_mask_loss=False), LABELS)
    assert not any(k.startswith("mask_") for k in without.terms)


def test_baseline_output_has_one_head() -> None:
    out = _output()
    out.logits = {"global": out.logits["global"]}
    out.features = {"global": out.features["global"]}
    out.attention, out.use_mask_loss = None, False
    result = compute_losses(out, LABELS)
    assert set(result.terms) == {"id_global"}
    assert _v(result.total) == pytest.approx(_v(result.terms["id_global"]))


def test_batch_hard_triplet_hand_computed() -> None:
    features = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 5.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # hardest positive / negative per anchor: (3, 1), (3, sqrt(10)), (4, 1), (4, 5)
    gaps = torch.tensor([3 - 1, 3 - 10 ** 0.5, 4 - 1, 4 - 5])
    assert _v(batch_hard_triplet(features, labels, "margin", 0.3)) == pytest.approx(_v(F.relu(gaps + 0.3).mean()),
                                                                                      rel=1e-5)
    assert _v(batch_hard_triplet(features, labels, "soft")) == pytest.approx(_v(F.softplus(gaps).mean()),
                                                                               rel=1e-5)


def test_triplet_skips_anchors_without_positive() -> None:
    features = torch.randn(4, 3, requires_grad=True)
    loss = batch_hard_triplet(features, torch.tensor([0, 1, 2, 3]))
    assert _v(loss) == 0.0
    loss.backward()  # still part of the graph
    pair = batch_hard_triplet(torch.tensor([[0.0], [1.0], [5.0]]), torch.tensor([0, 0, 1]))
    # anchors 0 and 1 have a positive; anchor 2 does not
    assert _v(pair) == pytest.approx(_v(F.relu(torch.tensor([1 - 5 + 0.3, 1 - 4 + 0.3])).mean()))


def test_triplet_term_in_compute_losses() -> None:
    result = compute_losses(_output(), LABELS, LossConfig(triplet="soft", triplet_weight=0.5, mask_loss_weight=0.0))
    ids = sum(w * result.terms[f"id_{h}"] for w, h in zip(result.id_weights, ("global", "suppression", "concat")))
    assert _v(result.total) == pytest.approx(_v(ids + 0.5 * result.terms["triplet"]), rel=1e-6)


@pytest.mark.parametrize("config", [LossConfig(id_weighting="max"), LossConfig(mask_loss="l1"),
                                    LossConfig(triplet="hard")])
def test_bad_config_raises(config: LossConfig) -> None:
    with pytest.raises(ConfigError):
        compute_losses(_output(), LABELS, config)

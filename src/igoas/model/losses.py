"""Training losses of IGOAS (SPEC section 4) and the function that combines them.

Defaults follow the authors' training engine: label-smoothed cross-entropy on the three
heads, combined with adaptive weights softmax([L_g, L_s, L_gs]) (not detached), plus the
OSM mask loss on the suppression branch's attention output and on the global branch's
stage-4 map, both with weight 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igoas.config import LossConfig
from igoas.utils.errors import ConfigError

if TYPE_CHECKING:
    from igoas.model import IGOASOutput


@dataclass
class LossResult:
    """The total to back-propagate, every term for logging, and the ID-loss weights."""

    total: Tensor
    terms: dict[str, Tensor]
    id_weights: Tensor | None


def cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.1) -> Tensor:
    """Cross-entropy against (1 - eps) * one_hot + eps / num_classes, averaged over the batch."""
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


def _channel_mean_mask_loss(feature_map: Tensor, visible_mask: Tensor) -> Tensor:
    # The authors' MSE(p, p * M) on the channel mean p, which equals mean((p * (1 - M))^2).
    p = feature_map.float().mean(dim=1, keepdim=True)
    return (p * (1 - visible_mask.float())).pow(2).mean()


def _per_channel_mask_loss(feature_map: Tensor, visible_mask: Tensor) -> Tensor:
    return (feature_map.float() * (1 - visible_mask.float())).pow(2).mean()


MASK_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "channel_mean": _channel_mean_mask_loss,
    "per_channel": _per_channel_mask_loss,
}


def mask_loss(feature_map: Tensor, visible_mask: Tensor, form: str = "channel_mean") -> Tensor:
    """OSM mask loss: how much of `feature_map` (B x C x h x w) lies where the mask
    (B x 1 x h x w, 0 = occluded) hides the person. Zero when the map is zero there."""
    return MASK_LOSSES[form](feature_map, visible_mask)


def _adaptive_weights(losses: Tensor) -> Tensor:
    # Not detached, as in the authors' engine: the weights are part of the graph.
    return torch.softmax(losses, dim=0)


def _mean_weights(losses: Tensor) -> Tensor:
    return torch.full_like(losses, 1.0 / losses.numel())


ID_WEIGHTINGS: dict[str, Callable[[Tensor], Tensor]] = {"adaptive": _adaptive_weights, "mean": _mean_weights}


def _pairwise_distances(features: Tensor) -> Tensor:
    squared = features.pow(2).sum(dim=1, keepdim=True)
    distances = squared + squared.t() - 2 * features @ features.t()
    # The clamp keeps sqrt's gradient finite on the diagonal.
    return distances.clamp_min(1e-12).sqrt()


def _margin_ranking(gap: Tensor, margin: float) -> Tensor:
    return F.relu(gap + margin)


def _soft_margin(gap: Tensor, margin: float) -> Tensor:
    return F.softplus(gap)


TRIPLET_FORMS: dict[str, Callable[[Tensor, float], Tensor]] = {"margin": _margin_ranking, "soft": _soft_margin}


def batch_hard_triplet(features: Tensor, labels: Tensor, form: str = "margin", margin: float = 0.3) -> Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017): for each anchor, its farthest positive
    and nearest negative. Anchors without a positive or a negative in the batch are left
    out (use a PK sampler so that every anchor has both); zero if none is left."""
    distances = _pairwise_distances(features.float())
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positives = same & ~eye
    hardest_positive = distances.masked_fill(~positives, float("-inf")).amax(dim=1)
    hardest_negative = distances.masked_fill(same, float("inf")).amin(dim=1)
    valid = positives.any(dim=1) & (~same).any(dim=1)
    if not valid.any():
        return distances.sum() * 0.0
    gap = hardest_positive[valid] - hardest_negative[valid]
    return TRIPLET_FORMS[form](gap, margin).mean()


class CenterLoss(nn.Module):
    """Center loss (Wen et al. 2016) as BoT uses it (layers/center_loss.py): the batch mean
    of each feature's squared distance to its identity's center, clamped to [1e-12, 1e12].
    The centers start ~ N(0, 1), as BoT's; they are learnt by their own optimiser (see
    `igoas.training.state.CenterState`), not the network's."""

    def __init__(self, num_classes: int, feature_dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, feature_dim, generator=generator))

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        if features.shape[1] != self.centers.shape[1]:
            raise ConfigError(f"loss.center_weight: the features are {features.shape[1]}-d but the centers "
                              f"{self.centers.shape[1]}-d; build the centers with the model's feature_dim")
        distances = (features.float() - self.centers[labels]).pow(2).sum(dim=1)
        return distances.clamp(1e-12, 1e12).mean()


def _unchanged(loss: Tensor) -> Tensor:
    return loss


def _check(config: LossConfig) -> None:
    choices = {"id_weighting": ID_WEIGHTINGS, "mask_loss": MASK_LOSSES}
    for option, table in choices.items():
        if getattr(config, option) not in table:
            raise ConfigError(f"loss option {option}={getattr(config, option)!r} is unknown; choose one of {sorted(table)}")
    if config.triplet is not None and config.triplet not in TRIPLET_FORMS:
        raise ConfigError(f"loss option triplet={config.triplet!r} is unknown; choose None or one of {sorted(TRIPLET_FORMS)}")


def compute_losses(output: IGOASOutput, labels: Tensor, config: LossConfig | None = None,
                   reduce: Callable[[Tensor], Tensor] | None = None,
                   centers: CenterLoss | None = None) -> LossResult:
    """Combine the model's training result and the identity labels into the total loss.

    Terms: `id_<head>` for every classifier head, `mask_suppression` and `mask_global`
    when the model uses the mask loss (`output.use_mask_loss`), `triplet` on the
    concatenated branch features when enabled. Returned terms are the unweighted values.
    `reduce`, when given, maps every loss value before the terms are combined: distributed
    training passes a differentiable mean over processes, so the adaptive weights see the
    losses of the whole batch, as one process would. `centers` (needed when
    `config.center_weight` > 0) adds the `center` term on the triplet's features.
    """
    config = config or LossConfig()
    _check(config)
    reduce = reduce or _unchanged
    heads = [f"id_{head}" for head in output.logits]
    id_losses = reduce(torch.stack([cross_entropy(logits, labels, config.label_smoothing)
                                    for logits in output.logits.values()]))
    terms = dict(zip(heads, id_losses.unbind()))
    id_weights = ID_WEIGHTINGS[config.id_weighting](id_losses)
    total = (id_weights * id_losses).sum()

    if output.use_mask_loss and output.attention is not None and config.mask_loss_weight:
        terms["mask_suppression"] = reduce(mask_loss(output.attention, output.visible_mask, config.mask_loss))
        if config.mask_loss_global and output.global_map is not None:
            terms["mask_global"] = reduce(mask_loss(output.global_map, output.visible_mask, config.mask_loss))
        total = total + config.mask_loss_weight * sum(v for k, v in terms.items() if k.startswith("mask_"))

    features = torch.cat(list(output.features.values()), dim=1)
    if config.triplet is not None:
        terms["triplet"] = reduce(batch_hard_triplet(features, labels, config.triplet, config.triplet_margin))
        total = total + config.triplet_weight * terms["triplet"]
    if config.center_weight:
        if centers is None:
            raise ConfigError("loss.center_weight > 0 needs the centers: pass compute_losses(..., centers=CenterLoss"
                              "(num_classes, feature_dim)), as the trainer does, or set loss.center_weight=0")
        terms["center"] = reduce(centers(features, labels))
        total = total + config.center_weight * terms["center"]
    return LossResult(total=total, terms=terms, id_weights=id_weights)

"""Helpers every stage-2 router shares: the routability check, the labelled-pair budget, the heads' per-pair losses,
and the context-aware router started from the stage-1 one."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.methods import Router as RouterKind
from bayesmicro.models.bt import bt_log_prob
from bayesmicro.models.mixture import Router


def check_routable(fit: Fit, source: str | None = None) -> None:
    """Stage 2 re-weights the run's heads: a one-head run has nothing to re-weight."""
    if fit.config.k < 2:
        raise BadInput("the run has one head (K = 1): stage-2 routing re-weights heads and needs K ≥ 2 "
                       "(fit with --k 2 or more)", source=source)


def budget_subset(data: EmbeddedPairs, budget: int, seed: int = 0, by: str = "group") -> EmbeddedPairs:
    """At most ``budget`` random pairs of every ``group`` (or ``user``) of ``data``: the labelled pairs of stage 2."""
    labels = getattr(data, by)
    if labels is None:
        raise BadInput(f"a per-{by} budget needs a '{by}' label for every pair", source=data.source)
    if budget < 1:
        raise BadInput(f"budget must be ≥ 1, got {budget}")
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == g))[:budget] for g in sorted(set(labels.tolist()))]
    return data.subset(np.sort(np.concatenate(keep)))


def rows_of(data: EmbeddedPairs, subset: EmbeddedPairs, by: str) -> np.ndarray:
    """(len(data),) bool: the rows of ``data`` that ``subset``'s pairs are (the same features and ``by`` label; a
    pair present c times in ``subset`` marks c of its copies). BadInput for a pair of ``subset`` that ``data``
    lacks."""
    def keys(pairs: EmbeddedPairs) -> list[bytes]:
        rows = torch.cat([pairs.chosen, pairs.rejected], dim=1).contiguous().numpy()
        labels = getattr(pairs, by)
        if labels is None:
            raise BadInput(f"the joint fit needs a '{by}' label for every pair", source=pairs.source)
        return [row.tobytes() + str(label).encode() for row, label in zip(rows, labels)]

    where: dict[bytes, list[int]] = {}
    for i, key in enumerate(keys(data)):
        where.setdefault(key, []).append(i)
    marked = np.zeros(len(data), dtype=bool)
    for j, key in enumerate(keys(subset)):
        if not where.get(key):
            raise BadInput(f"labelled pair {j} is not one of the population's pairs (the joint fit labels pairs "
                           "stage 1 was fitted on)", source=subset.source)
        marked[where[key].pop()] = True
    return marked


def head_losses(fit: Fit, data: EmbeddedPairs) -> torch.Tensor:
    """(n, K) L_ik = −log σ(Δ_ik), averaged over the heads' posterior draws."""
    return -bt_log_prob(fit.margins(data)).mean(0)


def context_router_from(fit: Fit, data: EmbeddedPairs, hidden: int | None = None) -> Router:
    """A router on [prompt; context] whose output equals the stage-1 router's at the start.

    Stage-1 ``prompt`` router: first layer's prompt columns and the output layer copied, context columns zero
    (``user`` / ``group`` router: its columns are the context's, which must be that label's one-hot).
    Stage-1 ``none`` router (static weights): a fresh net whose output bias holds the static logits. Stage-1
    ``context`` router: copied whole.
    """
    if data.context is None:
        raise BadInput("context-aware routing needs a 'context' feature matrix, and these pairs have none",
                       source=data.source)
    k, d_p, d_c = fit.config.k, data.prompt_dim, data.context_dim
    stage1 = fit._router
    hidden = hidden or fit.config.hidden
    router = Router(RouterKind.CONTEXT.value, k, d_p + d_c, hidden)
    x = data.router_input(True)
    router.standardize_from(x)
    with torch.no_grad():
        if k == 1:
            return router
        if stage1.kind == RouterKind.CONTEXT:
            router.load_state_dict(stage1.state_dict())
            return router
        first, last = router.net[0], router.net[2]
        if stage1.kind == RouterKind.PROMPT or RouterKind(stage1.kind).reads_label:
            # a label router read the one-hot context stage 2 is given (``Fit.with_label_context``)
            cols = slice(0, d_p) if stage1.kind == RouterKind.PROMPT else slice(d_p, d_p + d_c)
            reads = "prompt" if stage1.kind == RouterKind.PROMPT else f"'{stage1.kind}' one-hot"
            if stage1.input_mean.shape[0] != cols.stop - cols.start:
                raise BadInput(f"stage-1 router reads {stage1.input_mean.shape[0]} {reads} features, the pairs have "
                               f"{cols.stop - cols.start}", source=data.source)
            s_first, s_last = stage1.net[0], stage1.net[2]
            router.net[0] = first = nn.Linear(d_p + d_c, s_first.out_features)
            router.net[2] = last = nn.Linear(s_first.out_features, k)
            first.weight.zero_()
            first.weight[:, cols] = s_first.weight
            first.bias.copy_(s_first.bias)
            last.load_state_dict(s_last.state_dict())
            router.input_mean[cols] = stage1.input_mean
            router.input_scale[cols] = stage1.input_scale
        else:  # static stage-1 weights
            last.weight.zero_()
            last.bias.copy_(torch.log_softmax(stage1.logits, -1))
    return router

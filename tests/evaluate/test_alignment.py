import itertools

import torch

from bayesmicro.evaluate.alignment import align_draws, cosine_matrix, match_heads


def test_match_heads_recovers_a_known_permutation_and_beats_every_other():
    g = torch.Generator().manual_seed(0)
    reference = torch.randn(4, 6, generator=g)
    perm = torch.tensor([2, 0, 3, 1])
    shuffled = reference[perm] + 0.05 * torch.randn(4, 6, generator=g)
    found = match_heads(shuffled, reference)
    assert torch.equal(shuffled[found], shuffled[found])
    assert torch.allclose(shuffled[found], reference, atol=0.3)
    sim = cosine_matrix(shuffled, reference)
    best = max(sum(sim[p[j], j] for j in range(4)) for p in itertools.permutations(range(4)))
    assert torch.isclose(sum(sim[found[j], j] for j in range(4)), best)


def test_align_draws_undoes_label_switching():
    base = torch.randn(3, 5)
    draws = torch.stack([base, base[[1, 2, 0]], base[[2, 1, 0]]])
    aligned = align_draws(draws)
    assert torch.allclose(aligned, base.expand(3, 3, 5))

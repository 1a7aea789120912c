"""Fine-tuning penalties (L2-SP, BSS, DELTA) against answers worked out by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from transferlab.transfer import penalties
from transferlab.transfer.penalties import StartingPoint, bss, channel_attention, delta, l2sp


def _close(a: torch.Tensor, b: float | torch.Tensor, tol: float = 1e-6) -> bool:
    return torch.allclose(
        torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol, rtol=tol
    )


# ---------------------------------------------------------------- L2-SP


def test_defaults_are_the_papers():
    assert (penalties.L2SP_ALPHA, penalties.L2SP_BETA) == (0.1, 0.01)
    assert (penalties.BSS_K, penalties.BSS_ETA) == (1, 0.001)
    assert (penalties.DELTA_ALPHA, penalties.DELTA_BETA) == (0.01, 0.01)


def test_l2sp_known_answers():
    w, w0 = torch.tensor([1.0, 2.0]), torch.zeros(2)
    assert _close(l2sp([(w, w0)], [], alpha=0.1, beta=0.01), 0.25)  # 0.1/2 * (1 + 4)
    head = torch.tensor([3.0, 4.0])
    assert _close(l2sp([], [head], alpha=0.1, beta=0.01), 0.125)  # 0.01/2 * 25
    assert _close(l2sp([(w, w0)], [head], alpha=0.1, beta=0.01), 0.375)
    # the distance is to w0, not to zero: w0 = [1, 0] leaves only 0.1/2 * 4
    assert _close(l2sp([(w, torch.tensor([1.0, 0.0]))], [], alpha=0.1, beta=0.01), 0.2)
    # several tensors of different shapes add up
    m, m0 = torch.ones(2, 3), torch.zeros(2, 3)
    assert _close(l2sp([(w, w0), (m, m0)], [head, torch.ones(4)], alpha=0.2, beta=0.02), 0.1 * 11 + 0.01 * 29)


def test_l2sp_defaults_used_when_not_given():
    w, w0 = torch.tensor([1.0, 2.0]), torch.zeros(2)
    assert _close(l2sp([(w, w0)], [torch.tensor([3.0, 4.0])]), 0.1 / 2 * 5 + 0.01 / 2 * 25)


def test_l2sp_zero_at_the_starting_point_and_when_empty():
    w = torch.tensor([0.3, -1.2, 5.0])
    out = l2sp([(w, w.clone())], [], alpha=0.1, beta=0.01)
    assert out.ndim == 0 and out.item() == 0.0
    empty = l2sp([], [], alpha=0.1, beta=0.01)
    assert empty.ndim == 0 and empty.item() == 0.0


def test_l2sp_gradient_is_alpha_times_distance_and_beta_times_new():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    w0 = torch.tensor([0.5, -1.0], requires_grad=True)  # must not receive a gradient
    head = torch.tensor([3.0, -4.0], requires_grad=True)
    l2sp([(w, w0)], [head], alpha=0.1, beta=0.01).backward()
    assert torch.allclose(w.grad, 0.1 * torch.tensor([0.5, 3.0]))
    assert torch.allclose(head.grad, 0.01 * torch.tensor([3.0, -4.0]))
    assert w0.grad is None


def test_l2sp_rejects_mismatched_pairs():
    with pytest.raises(ValueError, match="shape"):
        l2sp([(torch.ones(3), torch.zeros(2))], [])


def test_starting_point_snapshot_is_a_detached_copy():
    lin = torch.nn.Linear(3, 2)
    params = list(lin.parameters())
    sp = StartingPoint(params)
    assert len(sp) == 2
    assert all(not v.requires_grad for v in sp.values())
    assert all(torch.equal(v, p) for v, p in zip(sp.values(), params, strict=True))
    assert l2sp(sp.pairs(params), []).item() == 0.0
    with torch.no_grad():
        lin.weight.add_(1.0)  # training moves the weights, not the snapshot
    assert not torch.equal(sp.values()[0], lin.weight)
    assert _close(l2sp(sp.pairs(params), [], alpha=0.1, beta=0.0), 0.1 / 2 * lin.weight.numel())


def test_starting_point_pulls_weights_back_during_training():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 1)
    sp = StartingPoint(lin.parameters())
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    with torch.no_grad():
        lin.weight.add_(2.0)
    before = l2sp(sp.pairs(list(lin.parameters())), [], alpha=1.0, beta=0.0).item()
    for _ in range(5):
        opt.zero_grad()
        l2sp(sp.pairs(list(lin.parameters())), [], alpha=1.0, beta=0.0).backward()
        opt.step()
    after = l2sp(sp.pairs(list(lin.parameters())), [], alpha=1.0, beta=0.0).item()
    assert _close(after, before * 0.9**10)  # each step scales w - w0 by (1 - lr * alpha)


def test_starting_point_buffers_move_and_persist():
    params = [torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.zeros(3))]
    sp = StartingPoint(params)
    assert set(sp.state_dict()) == {"w0_0", "w0_1"}
    sp.to(torch.float64)
    assert all(v.dtype == torch.float64 for v in sp.values())
    sp.to("meta")
    assert all(v.device.type == "meta" for v in sp.values())
    restored = StartingPoint([torch.zeros(2, 2), torch.ones(3)])
    restored.load_state_dict(StartingPoint(params).state_dict())  # a resume restores the source's w0
    assert torch.equal(restored.values()[0], torch.ones(2, 2))
    hidden = StartingPoint(params, persistent=False)
    assert hidden.state_dict() == {} and len(hidden) == 2
    holder = torch.nn.Module()
    holder.sp = hidden
    assert list(holder.state_dict()) == []


def test_starting_point_rejects_other_parameters():
    sp = StartingPoint([torch.ones(2), torch.ones(3)])
    with pytest.raises(ValueError, match="2 starting values"):
        sp.pairs([torch.ones(2)])
    with pytest.raises(ValueError, match="order"):
        sp.pairs([torch.ones(3), torch.ones(2)])


# ---------------------------------------------------------------- BSS


def test_bss_known_answers_on_a_diagonal_matrix():
    f = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
    assert _close(bss(f, k=1), 1.0)
    assert _close(bss(f, k=2), 5.0)
    assert _close(bss(f, k=3), 14.0)
    assert _close(bss(f), 1.0)  # k = 1 by default


def test_bss_k_beyond_the_rank_sums_every_singular_value():
    # batch 2 < dim 4: two singular values, 3 and 2
    f = torch.tensor([[3.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
    assert _close(bss(f, k=1), 4.0)
    assert _close(bss(f, k=2), 13.0)
    assert _close(bss(f, k=5), 13.0)
    assert _close(bss(f.T, k=5), 13.0)  # dim smaller than batch too
    assert bss(torch.zeros(0, 4), k=1).item() == 0.0


def test_bss_is_invariant_to_rotations_and_matches_the_gram_eigenvalues():
    torch.manual_seed(0)
    q1, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    f = q1 @ torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)) @ q2
    assert _close(bss(f, k=2), 5.0, tol=1e-10)
    g = torch.randn(6, 10, dtype=torch.float64)  # batch 6, dim 10: sigma^2 = eigenvalues of F F^T
    eig = torch.linalg.eigvalsh(g @ g.T)  # ascending
    assert _close(bss(g, k=1), eig[0], tol=1e-8)
    assert _close(bss(g, k=3), eig[:3].sum(), tol=1e-8)


def test_bss_gradient_shrinks_the_smallest_direction_only():
    f = torch.diag(torch.tensor([3.0, 2.0, 1.0])).requires_grad_()
    bss(f, k=1).backward()
    expected = torch.zeros(3, 3)
    expected[2, 2] = 2.0  # d(sigma_min^2)/dF = 2 sigma_min u v^T
    assert torch.allclose(f.grad, expected, atol=1e-6)


def test_bss_gradient_at_a_repeated_singular_value_is_finite():
    f = torch.eye(4).requires_grad_()
    bss(f, k=1).backward()
    assert torch.isfinite(f.grad).all()


def test_bss_is_deterministic_and_accepts_half_precision():
    torch.manual_seed(1)
    f = torch.randn(8, 5)
    assert bss(f, k=2).item() == bss(f.clone(), k=2).item()
    out = bss(f.to(torch.bfloat16), k=2)
    assert out.dtype == torch.float32
    assert _close(out, bss(f.to(torch.bfloat16).float(), k=2))


def test_bss_rejects_bad_input():
    with pytest.raises(ValueError, match="matrix"):
        bss(torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="k must"):
        bss(torch.ones(2, 3), k=0)


# ---------------------------------------------------------------- DELTA


def _maps() -> tuple[torch.Tensor, torch.Tensor]:
    """Batch 2, 2 channels, 2x2: channel 0 differs by 1 at each of 4 positions (4), channel 1 by 2 (16)."""
    target = torch.ones(2, 2, 2, 2)
    target[:, 1] = 2.0
    return target, torch.zeros(2, 2, 2, 2)


def test_delta_known_answers():
    t, s = _maps()
    assert _close(delta([t], [s]), 20.0)  # (4 + 16) per sample, mean over the batch
    assert _close(delta([t], [s], [torch.tensor([1.0, 0.5])]), 12.0)  # 4 + 0.5 * 16
    assert _close(delta([t, t[:, :1]], [s, s[:, :1]]), 24.0)  # layers add up
    per_sample = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # sample 0 keeps channel 0, sample 1 channel 1
    assert _close(delta([t], [s], [per_sample]), (4.0 + 16.0) / 2)


def test_delta_averages_over_the_batch():
    t, s = _maps()
    t1, s1 = t[:1], s[:1]
    assert _close(delta([t1], [s1]), delta([t], [s]))
    t2 = t.clone()
    t2[1] = 0.0  # the second sample matches its source: the mean halves
    assert _close(delta([t2], [s]), 10.0)


def test_delta_accepts_pooled_features():
    t = torch.tensor([[1.0, 2.0], [3.0, 0.0]])  # (batch, channels)
    assert _close(delta([t], [torch.zeros(2, 2)]), (1 + 4 + 9) / 2)


def test_delta_relates_to_the_reference_sum_by_half_the_batch():
    torch.manual_seed(0)
    t, s = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    reference = 0.5 * torch.norm(t - s) ** 2  # tllib BehavioralRegularization / the authors' reg_fea_map
    assert _close(delta([t], [s]) * t.shape[0] / 2, reference, tol=1e-5)


def test_delta_zero_when_maps_match_and_gradient_only_to_target():
    t, s = _maps()
    assert delta([s], [s.clone()]).item() == 0.0
    assert delta([], []).item() == 0.0
    t = t.requires_grad_()
    s = s.requires_grad_()
    w = torch.tensor([1.0, 0.5])
    delta([t], [s], [w]).backward()
    assert s.grad is None
    expected = 2 * w.view(1, 2, 1, 1) * (t.detach() - s.detach()) / t.shape[0]
    assert torch.allclose(t.grad, expected)


def test_delta_rejects_mismatches():
    t, s = _maps()
    with pytest.raises(ValueError, match="source maps"):
        delta([t, t], [s])
    with pytest.raises(ValueError, match="must match"):
        delta([t], [s[:, :1]])
    with pytest.raises(ValueError, match="one per layer"):
        delta([t], [s], [torch.ones(2), torch.ones(2)])


def test_channel_attention_normalises_importances():
    a = channel_attention(torch.tensor([0.1, 0.5, 0.2, 0.0]))
    assert _close(a.mean(), 1.0)
    assert torch.equal(a.argsort(), torch.tensor([3, 0, 2, 1]))  # order of the importances kept
    assert torch.allclose(channel_attention(torch.full((3,), 0.7)), torch.ones(3))  # equal -> unweighted
    x = torch.tensor([0.0, 1.0])  # standardised to -1, +1: ratio e^(2/T)
    assert _close(channel_attention(x)[1] / channel_attention(x)[0], math.exp(2 / 5))
    assert _close(channel_attention(x, temperature=1.0)[1] / channel_attention(x, temperature=1.0)[0], math.exp(2))

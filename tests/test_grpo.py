"""grpo.py against hand-computed values and against plain-loop implementations written to be obvious."""

import csv
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, exact_log, run

from grpo import (
    batch_share,
    clip_range,
    completion_mask,
    entropy_from_logits,
    group_advantages,
    grpo_loss,
    per_token_logps,
    token_entropy,
    token_entropy_pieces,
    truncated,
)

# -----------------------------------------------------------------------------
# plain-loop references: one number at a time, no broadcasting tricks


def loop_advantages(rewards, G, scale, eps=1e-4):
    r = [float(x) for x in rewards]
    out = []
    batch_mean = sum(r) / len(r)
    batch_std = math.sqrt(sum((x - batch_mean) ** 2 for x in r) / (len(r) - 1))
    for b in range(len(r) // G):
        grp = r[b * G : (b + 1) * G]
        m = sum(grp) / G
        s = math.sqrt(sum((x - m) ** 2 for x in grp) / (G - 1))
        for x in grp:
            if scale == "group":
                out.append((x - m) / (s + eps))
            elif scale == "batch":
                out.append((x - m) / (batch_std + eps))
            else:
                out.append(x - m)
    return torch.tensor(out)


def loop_loss(logp, old, ref, adv, mask, clip_lo, clip_hi, beta, loss_type, L):
    N, T = len(logp), len(logp[0])
    total, tokens, per_seq = 0.0, 0.0, []
    for i in range(N):
        s, n = 0.0, 0.0
        for t in range(T):
            if mask[i][t] == 0:
                continue
            ratio = math.exp(logp[i][t] - old[i][t])
            clipped = min(max(ratio, 1 - clip_lo), 1 + clip_hi)
            surrogate = min(ratio * adv[i], clipped * adv[i])
            d = ref[i][t] - logp[i][t]
            k3 = math.exp(d) - d - 1
            s += -surrogate + beta * k3
            n += 1
        per_seq.append(s / max(n, 1))
        total += s
        tokens += n
    if loss_type == "grpo":
        return sum(per_seq) / N
    if loss_type in ("bnpo", "dapo"):
        return total / tokens
    return total / (N * L)


def random_batch(N=6, T=5, seed=0, spread=0.5):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(N, T, generator=g) * 3
    logp = old + spread * torch.randn(N, T, generator=g)  # ratios well inside and outside [0.8, 1.2]
    ref = old + 0.3 * torch.randn(N, T, generator=g)
    adv = torch.randn(N, generator=g)
    lengths = torch.tensor([5, 3, 1, 4, 5, 2])[:N]
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    return logp, old, ref, adv, mask


# -----------------------------------------------------------------------------
# group_advantages


def test_advantages_hand_computed():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    adv = group_advantages(r, 4)
    # group 1: mean 0.25, unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-4)
    assert torch.allclose(adv[:4], expected, atol=1e-6)
    assert torch.equal(adv[4:], torch.zeros(4))  # all equal: exactly 0, not NaN


def test_advantages_none_and_batch_hand_computed():
    r = torch.tensor([2.0, 0.0, 1.0, 1.0])
    assert torch.allclose(group_advantages(r, 2, scale="none"), torch.tensor([1.0, -1.0, 0.0, 0.0]))
    # batch std of [2, 0, 1, 1]: mean 1, unbiased var (1 + 1 + 0 + 0) / 3
    s = math.sqrt(2 / 3)
    assert torch.allclose(group_advantages(r, 2, scale="batch"), torch.tensor([1 / (s + 1e-4), -1 / (s + 1e-4), 0, 0]))


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("G", [2, 4, 8])
def test_advantages_match_loop(scale, G):
    r = torch.randint(0, 3, (4 * G,)).float() + torch.rand(4 * G).round()  # ties and equal groups happen
    r[:G] = 1.0  # one group all equal
    adv = group_advantages(r, G, scale=scale)
    assert torch.allclose(adv, loop_advantages(r, G, scale), atol=1e-5)
    assert torch.isfinite(adv).all() and torch.equal(adv[:G], torch.zeros(G))


def test_advantages_bad_input():
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.zeros(6), 4)  # 6 completions cannot form groups of 4
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.zeros(4), 1)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.zeros(4), 2, scale="z")


# -----------------------------------------------------------------------------
# grpo_loss


def test_loss_hand_computed():
    # one token: ratio 1.5 with A = +1 is clipped to 1.2; k3 with ref = old = 0 and logp = log 1.5
    logp = torch.tensor([[math.log(1.5)]])
    zero = torch.zeros(1, 1)
    loss, stats = grpo_loss(logp, zero, zero, torch.tensor([1.0]), torch.ones(1, 1), beta=0.04)
    k3 = 1 / 1.5 + math.log(1.5) - 1  # exp(-log 1.5) - (-log 1.5) - 1 = 0.0721318
    assert loss.item() == pytest.approx(-1.2 + 0.04 * k3, abs=1e-6)
    assert stats["kl"].item() == pytest.approx(k3, abs=1e-6)
    assert stats["clip_frac_high"].item() == 1.0 and stats["clip_frac_low"].item() == 0.0
    # A = -1: -min(-1.5, -1.2) = 1.5, not clipped (the pessimistic side)
    loss, stats = grpo_loss(logp, zero, zero, torch.tensor([-1.0]), torch.ones(1, 1), beta=0.0)
    assert loss.item() == pytest.approx(1.5, abs=1e-6) and stats["clip_frac"].item() == 0.0


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("clip_high", [None, 0.28])
def test_loss_matches_loop(loss_type, clip_high):
    logp, old, ref, adv, mask = random_batch()
    loss, _ = grpo_loss(
        logp,
        old,
        ref,
        adv,
        mask,
        clip_eps=0.2,
        clip_eps_high=clip_high,
        beta=0.04,
        loss_type=loss_type,
        max_completion_len=7,
    )
    hi = 0.2 if clip_high is None else clip_high
    expected = loop_loss(
        logp.tolist(), old.tolist(), ref.tolist(), adv.tolist(), mask.tolist(), 0.2, hi, 0.04, loss_type, 7
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_loss_normalisers_differ():
    """The four aggregations are different numbers on ragged completions (a test that could fail)."""
    logp, old, ref, adv, mask = random_batch()
    values = {t: grpo_loss(logp, old, ref, adv, mask, loss_type=t)[0].item() for t in ["grpo", "bnpo", "dr_grpo"]}
    assert len({round(v, 6) for v in values.values()}) == 3


def test_dapo_global_token_count():
    logp, old, ref, adv, mask = random_batch()
    local, _ = grpo_loss(logp, old, ref, adv, mask, loss_type="dapo")
    global_, _ = grpo_loss(logp, old, ref, adv, mask, loss_type="dapo", num_tokens=2 * mask.sum())
    assert global_.item() == pytest.approx(local.item() / 2, rel=1e-6)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
def test_masked_tokens_get_no_gradient(loss_type):
    logp, old, ref, adv, mask = random_batch()
    logp = logp.clone().requires_grad_(True)
    loss, _ = grpo_loss(logp, old, ref, adv, mask, loss_type=loss_type)
    loss.backward()
    assert torch.all(logp.grad[mask == 0] == 0)
    assert torch.all(logp.grad[mask == 1] != 0)
    # and what sits in masked positions (any valid log-prob) does not change the loss
    logp2 = logp.detach().clone()
    logp2[mask == 0] = -30.0
    assert grpo_loss(logp2, old, ref, adv, mask, loss_type=loss_type)[0].item() == pytest.approx(loss.item(), abs=1e-6)


def test_k3_nonnegative_and_zero_at_reference():
    logp, old, ref, adv, mask = random_batch(spread=2.0)
    d = ref - logp
    k3 = torch.exp(d) - d - 1
    assert (k3 >= 0).all()
    _, stats = grpo_loss(logp, old, ref, adv, mask)
    assert stats["kl"].item() > 0
    _, stats = grpo_loss(logp, old, logp.clone(), adv, mask)
    assert stats["kl"].item() == 0.0


def test_mu1_gradient_equals_reinforce():
    """With old_logp = logp.detach() the ratio is 1 and the gradient is -A * grad log pi (token mean)."""
    torch.manual_seed(0)
    W = torch.randn(8, 11, requires_grad=True)  # a tiny "policy": logits = x @ W
    x = torch.randn(6, 5, 8)
    tokens = torch.randint(0, 11, (6, 5))
    _, _, ref, adv, mask = random_batch()

    logp = per_token_logps(x @ W, tokens)
    loss, stats = grpo_loss(logp, logp.detach(), ref, adv, mask, beta=0.0, loss_type="grpo")
    (g_grpo,) = torch.autograd.grad(loss, W)
    assert stats["ratio_mean"].item() == 1.0 and stats["clip_frac"].item() == 0.0

    logp = per_token_logps(x @ W, tokens)
    reinforce = -(adv[:, None] * logp * mask).sum(1) / mask.sum(1)  # (N,)
    (g_ref,) = torch.autograd.grad(reinforce.mean(), W)
    assert torch.allclose(g_grpo, g_ref, atol=1e-6)


def test_clipped_ratio_gets_no_gradient():
    logp = torch.tensor([[math.log(1.5), math.log(0.5)]], requires_grad=True)
    old = torch.zeros(1, 2)
    loss, _ = grpo_loss(logp, old, old, torch.tensor([1.0]), torch.ones(1, 2), beta=0.0)
    loss.backward()
    assert logp.grad[0, 0] == 0  # ratio 1.5 > 1.2 with A > 0: clipped, no gradient
    assert logp.grad[0, 1] != 0  # ratio 0.5 with A > 0: the unclipped branch is the min


def test_defaults_are_the_papers():
    """clip_eps 0.2, beta 0.04 (DeepSeekMath section 4.2) and the paper's per-completion token mean."""
    logp, old, ref, adv, mask = random_batch()
    default, _ = grpo_loss(logp, old, ref, adv, mask)
    explicit, _ = grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, clip_eps_high=0.2, beta=0.04, loss_type="grpo")
    assert default.item() == explicit.item()


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
def test_one_real_token_and_empty_batch(loss_type):
    """A batch with a single real token: its per-token term, divided by 1 (by N * T for dr_grpo); a batch
    with no real token at all: 0, not NaN (the count is clamped to 1, not to anything larger)."""
    logp, old, ref, adv, _ = random_batch()
    mask = torch.zeros(6, 5)
    mask[3, 0] = 1.0
    loss, _ = grpo_loss(logp, old, ref, adv, mask, loss_type=loss_type)
    term = loop_loss(logp.tolist(), old.tolist(), ref.tolist(), adv.tolist(), mask.tolist(), 0.2, 0.2, 0.04, "bnpo", 5)
    expected = {"grpo": term / 6, "bnpo": term, "dapo": term, "dr_grpo": term / (6 * 5)}[loss_type]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss, stats = grpo_loss(logp, old, ref, adv, torch.zeros(6, 5), loss_type=loss_type)
    assert loss.item() == 0.0 and all(v.item() == 0.0 for v in stats.values())


def test_stats_match_loop():
    """Every diagnostic is a masked mean over the real tokens, counted one token at a time."""
    logp, old, ref, adv, mask = random_batch(spread=0.8)
    _, stats = grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, clip_eps_high=0.28)
    kl = low = high = ratio_sum = pg = n = 0.0
    for i in range(6):
        for t in range(5):
            if mask[i, t] == 0:
                continue
            ratio = math.exp(logp[i, t].item() - old[i, t].item())
            a = adv[i].item()
            d = ref[i, t].item() - logp[i, t].item()
            kl += math.exp(d) - d - 1
            low += ratio < 0.8 and a < 0
            high += ratio > 1.28 and a > 0
            ratio_sum += ratio
            pg += -min(ratio * a, min(max(ratio, 0.8), 1.28) * a)
            n += 1
    assert low > 0 and high > 0  # the batch exercises both clips
    expected = {"kl": kl, "clip_frac_low": low, "clip_frac_high": high, "clip_frac": low + high}
    expected |= {"ratio_mean": ratio_sum, "pg_loss": pg}
    assert set(stats) == set(expected)
    for k, v in expected.items():
        assert stats[k].item() == pytest.approx(v / n, rel=1e-5, abs=1e-6), k


def test_clip_frac_hand_computed():
    """A token is clipped only when its ratio left [1 - eps, 1 + eps] (a closed range) in the direction its
    advantage pushes: then, and only then, it gets no policy gradient. One token per completion."""
    rows = [  # (ratio, advantage, clipped)
        (0.5, 0.0, None),  # A = 0 (a group of equal rewards): nothing to clip
        (1.5, 0.0, None),
        (0.5, 0.5, None),  # A > 0 and the ratio fell: the unclipped branch is the min
        (1.5, -0.5, None),  # A < 0 and the ratio rose: likewise
        (0.75, -1.0, None),  # exactly on the lower boundary: inside, full gradient
        (1.25, 1.0, None),  # exactly on the upper boundary
        (0.5, -1.0, "low"),
        (1.5, 1.0, "high"),
    ]
    logp = torch.tensor([[exact_log(r)] for r, _, _ in rows], requires_grad=True)
    A = torch.tensor([a for _, a, _ in rows])
    zeros = torch.zeros(len(rows), 1)
    loss, stats = grpo_loss(logp, zeros, zeros, A, torch.ones(len(rows), 1), clip_eps=0.25, beta=0.0)
    loss.backward()
    assert stats["clip_frac_low"].item() == pytest.approx(1 / 8)
    assert stats["clip_frac_high"].item() == pytest.approx(1 / 8)
    assert stats["clip_frac"].item() == pytest.approx(2 / 8)
    expected = [0.0 if c else -a * r / 8 for r, a, c in rows]  # d/dlogp of -A * ratio, mean over 8
    assert torch.allclose(logp.grad.flatten(), torch.tensor(expected), atol=1e-7)


def test_unknown_loss_type():
    logp, old, ref, adv, mask = random_batch()
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(logp, old, ref, adv, mask, loss_type="sum")


# -----------------------------------------------------------------------------
# batch_share: a piece of the batch (micro-batch, DDP rank) returns its share of the batch's loss
#
# Two DDP ranks of 5 completions each, T = 4, each rank in micro-batches of 3 and 2 completions (unequal). With
# logp == old == ref the ratio is 1 and k3 is 0, so every real token's term is -A_i (cispo: -A_i * logp = A_i at
# logp = -1), and the shares can be added up by hand.

LENGTHS = [[1, 2, 3, 4, 2], [4, 4, 1, 3, 2]]  # real tokens per completion: rank 0 holds 12, rank 1 holds 14
ADV = [[1.0, -1.0, 2.0, 0.0, -2.0], [-1.0, 1.0, 1.0, -2.0, 0.0]]
PIECES = [slice(0, 3), slice(3, 5)]


def rank_batch(rank):
    mask = (torch.arange(4)[None, :] < torch.tensor(LENGTHS[rank])[:, None]).float()  # (5, 4)
    logp = -torch.ones(5, 4)
    return logp, torch.tensor(ADV[rank]), mask


def shares(loss_type, world=2, **kw):
    """Each rank's micro-batches' losses, given the whole batch's counts as train_grpo.py passes them."""
    global_tokens = sum(sum(x) for x in LENGTHS)  # 26
    out = []
    for rank in range(world):
        logp, adv, mask = rank_batch(rank)
        counts = dict(num_completions=5, rank_tokens=mask.sum(), num_tokens=global_tokens, world_size=world)
        out.append([
            grpo_loss(logp[m], logp[m], logp[m], adv[m], mask[m], loss_type=loss_type, max_completion_len=4,
                      **counts, **{k: (v[rank][m] if k == "entropy" else v) for k, v in kw.items()})[0].item()
            for m in PIECES
        ])  # fmt: skip
    return out


def test_batch_share_factors_by_hand():
    """The factor of a micro-batch of 3 of a rank's 5 completions (6 of its 12 real tokens), with 2 ranks.
    Bugs caught: the micro-batch's own count taken for the rank's (factor 1), completions counted where bnpo
    needs tokens (3/5), the world size applied to the per-rank means (grpo, bnpo) or left off dapo and cispo."""
    _, _, mask = rank_batch(0)
    m = mask[:3]  # 1 + 2 + 3 = 6 real tokens
    want = {"grpo": 3 / 5, "dr_grpo": 3 / 5, "bnpo": 6 / 12, "dapo": 2, "cispo": 2}
    for loss_type, factor in want.items():
        got = batch_share(loss_type, m, num_completions=5, rank_tokens=mask.sum(), world_size=2)
        assert float(got) == pytest.approx(factor, rel=1e-7), loss_type
        assert float(batch_share(loss_type, m)) == 1.0  # no counts given: the call's batch is the whole


# the shares by hand: (rank 0: piece 0, piece 1), (rank 1: piece 0, piece 1), and DDP's mean of the ranks' sums
HAND = {
    # each completion's token mean of -A, their mean over the piece, x m / 5
    "grpo": ([-2 / 3 * 3 / 5, 1 * 2 / 5], [-1 / 3 * 3 / 5, 1 * 2 / 5], 0.1),
    # token sums of -A: rank 0: -1 + 2 - 6 = -5 and 0 + 4 = 4; rank 1: 4 - 4 - 1 = -1 and 6 + 0 = 6; over T x 5
    "dr_grpo": ([-5 / 20, 4 / 20], [-1 / 20, 6 / 20], 0.1),
    # the piece's token mean x its tokens / the rank's: -5/6 x 6/12, 4/6 x 6/12; -1/9 x 9/14, 6/5 x 5/14
    "bnpo": ([-5 / 12, 4 / 12], [-1 / 14, 6 / 14], (-1 / 12 + 5 / 14) / 2),
    # the token sums over the global 26 tokens, x 2 ranks
    "dapo": ([-10 / 26, 8 / 26], [-2 / 26, 12 / 26], 4 / 26),
    "cispo": ([10 / 26, -8 / 26], [2 / 26, -12 / 26], -4 / 26),  # -A * logp = +A at logp = -1
}


@pytest.mark.parametrize("loss_type", list(HAND))
def test_micro_batch_shares_by_hand_and_against_one_piece(loss_type):
    """Each micro-batch's loss on each of 2 ranks, by hand; DDP's mean of the ranks' sums equals grpo_loss on
    the global batch in one piece (bnpo: the mean of the ranks' one-piece losses, its definition). Bugs caught:
    a share taken over the micro-batch instead of the rank's batch (grpo: -2/3 instead of -2/5), bnpo weighted
    by completions, dapo divided by the rank's token count or not multiplied by the world size."""
    r0, r1, ddp_mean = HAND[loss_type]
    got = shares(loss_type)
    assert got[0] == pytest.approx(r0, abs=1e-7) and got[1] == pytest.approx(r1, abs=1e-7)
    assert (sum(got[0]) + sum(got[1])) / 2 == pytest.approx(ddp_mean, abs=1e-7)
    batches = [rank_batch(0), rank_batch(1)]
    if loss_type == "bnpo":  # the rank's own token mean, then DDP's mean
        one = sum(grpo_loss(lp, lp, lp, a, m, loss_type="bnpo")[0].item() for lp, a, m in batches) / 2
    else:
        lp, a, m = (torch.cat(x) for x in zip(*batches, strict=True))  # (10, 4) the global batch in one process
        one = grpo_loss(lp, lp, lp, a, m, loss_type=loss_type, max_completion_len=4)[0].item()
    assert one == pytest.approx(ddp_mean, abs=1e-7)


@pytest.mark.parametrize("loss_type", list(HAND))
def test_entropy_bonus_shares_by_hand(loss_type):
    """The bonus is c x the global batch's token mean of H for every loss type: H = 1 on rank 0's 12 tokens, 3 on
    rank 1's 14, so c x (12 + 42) / 26 = c x 27/13, and each piece adds c x 2 x (its H sum) / 26. Bugs caught:
    the rank's token mean (c x (1 + 3) / 2 = 2c), the micro-batch's, the bonus not multiplied by the world size
    against DDP's mean (c x 27/26), or multiplied twice under dapo and cispo (issue 18 item 1: 2c x 27/13)."""
    c = 0.5
    H = [torch.full((5, 4), 1.0), torch.full((5, 4), 3.0)]
    with_bonus, without = shares(loss_type, entropy=H, entropy_coef=c), shares(loss_type)
    bonus = [[w - x for w, x in zip(a, b, strict=True)] for a, b in zip(with_bonus, without, strict=True)]
    assert bonus[0] == pytest.approx([-c * 2 * 6 / 26, -c * 2 * 6 / 26], abs=1e-7)  # 6 and 6 tokens of H = 1
    assert bonus[1] == pytest.approx([-c * 2 * 27 / 26, -c * 2 * 15 / 26], abs=1e-7)  # 9 and 5 tokens of H = 3
    assert (sum(bonus[0]) + sum(bonus[1])) / 2 == pytest.approx(-c * 27 / 13, abs=1e-7)


@pytest.mark.parametrize("loss_type", list(HAND))
def test_share_of_a_batch_without_real_tokens_is_zero(loss_type):
    """--mask-truncated can leave a rank (and every micro-batch of it) without a real token: its share is 0 with
    a zero gradient, never 0/0 = NaN, which would skip the step on every rank. Bug caught: an unclamped count
    (the rank's tokens for bnpo, the global count for dapo, cispo and the bonus)."""
    logp = torch.randn(3, 4, requires_grad=True)
    mask, zero = torch.zeros(3, 4), torch.tensor(0.0)
    counts = dict(num_completions=5, rank_tokens=zero, num_tokens=zero, world_size=2)
    loss, _ = grpo_loss(logp, logp.detach() + 0.1, logp.detach(), torch.randn(3), mask, loss_type=loss_type,
                        entropy=torch.rand(3, 4), entropy_coef=0.1, **counts)  # fmt: skip
    (g,) = torch.autograd.grad(loss, logp)
    assert loss.item() == 0.0 and torch.equal(g, torch.zeros(3, 4))


@pytest.mark.parametrize("loss_type", list(HAND))
@pytest.mark.parametrize("coef", [0.0, 0.2])
def test_shares_give_the_one_piece_gradient(loss_type, coef):
    """Random ratios, KL and entropies, mu > 1 style (logp != old): DDP's mean over 2 ranks of the gradients
    accumulated over unequal micro-batches (3 + 2) equals the gradient of the global batch's loss in one piece
    (bnpo: the mean of the ranks' one-piece losses; the bonus: the global token mean, for every loss type).
    Bugs caught: any piece's share off by a factor (the gradient, not only the value, would be off), the
    bonus's normaliser or world factor wrong, a normaliser taken from the piece where the batch's is meant."""
    g = torch.Generator().manual_seed(7)
    theta = (-torch.rand(10, 4, generator=g) * 2).requires_grad_(True)  # the "parameters": one row per completion
    old = theta.detach() + 0.3 * torch.randn(10, 4, generator=g)
    ref = theta.detach() + 0.2 * torch.randn(10, 4, generator=g)
    adv = torch.randn(10, generator=g)
    Hp = (torch.rand(10, 4, generator=g) * 2).requires_grad_(True)
    lengths = [1, 2, 3, 4, 2, 4, 4, 1, 3, 2]
    mask = (torch.arange(4)[None, :] < torch.tensor(lengths)[:, None]).float()
    kw = dict(loss_type=loss_type, max_completion_len=4, entropy_coef=coef, entropy=Hp)
    rows = [slice(0, 5), slice(5, 10)]
    ddp_loss, ddp_grads = 0.0, [torch.zeros(10, 4), torch.zeros(10, 4)]
    for r in rows:  # each rank: backward after each micro-batch (gradients add), then DDP's mean over 2 ranks
        counts = dict(num_completions=5, rank_tokens=mask[r].sum(), num_tokens=mask.sum(), world_size=2)
        for p in PIECES:
            m = slice(r.start + p.start, r.start + p.stop)
            loss, _ = grpo_loss(theta[m], old[m], ref[m], adv[m], mask[m], **counts, **{**kw, "entropy": Hp[m]})
            for acc, gr in zip(ddp_grads, torch.autograd.grad(loss, (theta, Hp), allow_unused=True), strict=True):
                acc += 0 if gr is None else gr / 2
            ddp_loss += loss.item() / 2
    if loss_type == "bnpo":  # by definition the ranks' own token means; the bonus is still the global one
        one = sum(grpo_loss(theta[r], old[r], ref[r], adv[r], mask[r], loss_type="bnpo")[0] for r in rows) / 2
        one = one - coef * (Hp * mask).sum() / mask.sum()
    else:
        one, _ = grpo_loss(theta, old, ref, adv, mask, **kw)
    want = torch.autograd.grad(one, (theta, Hp), allow_unused=True)
    assert ddp_loss == pytest.approx(one.item(), rel=1e-5, abs=1e-7)
    assert torch.allclose(ddp_grads[0], want[0], atol=1e-6)
    if coef:
        assert torch.allclose(ddp_grads[1], want[1], atol=1e-7) and (want[1] != 0).any()


# -----------------------------------------------------------------------------
# log-probs, entropy, mask


def test_per_token_logps_equals_cross_entropy():
    logits = torch.randn(3, 4, 7) * 3
    tokens = torch.randint(0, 7, (3, 4))
    expected = -F.cross_entropy(logits.reshape(-1, 7), tokens.reshape(-1), reduction="none").view(3, 4)
    assert torch.allclose(per_token_logps(logits, tokens), expected, atol=1e-5)


def test_per_token_logps_gradient_equals_log_softmax_gather():
    """The gradient through the logits is one-hot minus softmax: a detached log-sum-exp (same values) would
    give one-hot alone, so compare the gradient with a plain log_softmax + gather, and with the formula."""
    torch.manual_seed(0)
    logits = (torch.randn(3, 4, 7) * 2).requires_grad_(True)
    tokens = torch.randint(0, 7, (3, 4))
    w = torch.randn(3, 4)  # a weighted sum, so every position's gradient is scaled differently
    (got,) = torch.autograd.grad((per_token_logps(logits, tokens) * w).sum(), logits)
    plain = F.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    (want,) = torch.autograd.grad((plain * w).sum(), logits)
    assert torch.allclose(got, want, atol=1e-6)
    by_hand = (F.one_hot(tokens, 7).float() - F.softmax(logits.detach(), -1)) * w.unsqueeze(-1)
    assert torch.allclose(got, by_hand, atol=1e-6)


@pytest.mark.parametrize("start", [0, 3])
def test_per_token_logps_bit_for_bit_as_autograd(start):
    """The written-out backward (SelectiveLogSoftmax) against autograd's own gather - logsumexp on the sliced
    logits: the same log-probs and the same gradient, bit for bit (the arithmetic CSV depends on it), zero at
    the start prompt positions; and torch's gradcheck in float64. Bugs caught: a sign or a missing term in the
    backward, the gradient written at the wrong positions, prompt positions left uninitialised."""
    torch.manual_seed(0)
    N, T, V = 4, 6, 50
    logits = (torch.randn(N, start + T, V) * 3).requires_grad_(True)
    tokens = torch.randint(0, V, (N, T))
    w = torch.randn(N, T)
    got = per_token_logps(logits, tokens, start)
    (g_got,) = torch.autograd.grad((got * w).sum(), logits)
    x = logits[:, start:]
    want = x.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(x, -1)
    (g_want,) = torch.autograd.grad((want * w).sum(), logits)
    assert torch.equal(got, want) and torch.equal(g_got, g_want)
    assert torch.equal(g_got[:, :start], torch.zeros(N, start, V))
    x64 = torch.randn(2, start + 3, 5, dtype=torch.float64, requires_grad=True)
    t64 = torch.randint(0, 5, (2, 3))
    assert torch.autograd.gradcheck(lambda z: per_token_logps(z, t64, start), (x64,))


@pytest.mark.parametrize("shape,numbers", [((5, 7, 11), 160), ((3, 7, 11), 40), ((2, 4, 9), 10**6)])
def test_token_entropy_pieces_bit_for_bit(shape, numbers):
    """The logged entropy column in pieces (several rows; pieces of a row; all at once) equals token_entropy
    on the whole tensor bit for bit, also on a slice of a forward's logits (a view). Bugs caught: a piece
    dropped or counted twice, rows and positions mixed up."""
    torch.manual_seed(0)
    full = torch.randn(shape[0], shape[1] + 2, shape[2]) * 2
    logits = full[:, 2:]  # (n, T, V), not contiguous
    assert torch.equal(token_entropy_pieces(logits, numbers), token_entropy(logits))


def test_entropy_hand_computed_and_loop():
    V = 5
    logits = torch.zeros(1, 2, V)
    logits[0, 1, 0] = 100.0  # position 1 is (almost) deterministic
    mask = torch.ones(1, 2)
    assert entropy_from_logits(logits, mask).item() == pytest.approx(math.log(V) / 2, abs=1e-5)
    assert entropy_from_logits(logits, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(math.log(V), abs=1e-5)
    logits = torch.randn(3, 4, V)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]).float()
    vals = []
    for i in range(3):
        for t in range(4):
            if mask[i, t]:
                p = torch.softmax(logits[i, t], -1).tolist()
                vals.append(-sum(q * math.log(q) for q in p))
    assert entropy_from_logits(logits, mask).item() == pytest.approx(sum(vals) / len(vals), abs=1e-5)


def test_completion_mask():
    eos = 9
    tokens = torch.tensor([[5, eos, 3, eos], [1, 2, 3, 4], [eos, 1, 1, 1]])
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]).float()
    assert torch.equal(completion_mask(tokens, eos), expected)


def test_beta_zero_needs_no_reference():
    """--beta 0 skips the reference forward: grpo_loss takes ref_logp=None and gives the same loss and
    gradient as with a reference at beta 0; with beta > 0 a missing reference is an error."""
    torch.manual_seed(0)
    logp = torch.randn(4, 5, requires_grad=True)
    old, ref, adv, mask = torch.randn(4, 5), torch.randn(4, 5), torch.randn(4), (torch.rand(4, 5) > 0.3).float()
    with_ref, s1 = grpo_loss(logp, old, ref, adv, mask, beta=0.0)
    (g1,) = torch.autograd.grad(with_ref, logp)
    without, s2 = grpo_loss(logp, old, None, adv, mask, beta=0.0)
    (g2,) = torch.autograd.grad(without, logp)
    assert torch.equal(with_ref, without) and torch.equal(g1, g2)
    assert "kl" in s1 and "kl" not in s2
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(logp, old, None, adv, mask, beta=0.04)


# -----------------------------------------------------------------------------
# GRPO's descendants: GSPO, CISPO, two-sided clipping, truncation and entropy masks, the entropy bonus


def old_grpo_loss(logp, old_logp, ref_logp, advantages, mask, *, clip_eps=0.2, clip_eps_high=None, beta=0.04,
                  loss_type="grpo", max_completion_len=None, num_tokens=None):  # fmt: skip
    """grpo_loss as it was before the descendants were added (verbatim): the defaults must not change it."""
    old_logp, advantages = old_logp.detach(), advantages.detach()
    mask = mask.float()
    eps_low = clip_eps
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    A = advantages.unsqueeze(1)
    logratio = logp - old_logp
    ratio = torch.exp(logratio)
    pg_loss1 = -ratio * A
    pg_loss2 = -torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * A
    pg_loss = torch.max(pg_loss1, pg_loss2)
    per_token = pg_loss
    if ref_logp is not None:
        d = ref_logp.detach() - logp
        kl = torch.exp(d) - d - 1
        per_token = pg_loss + beta * kl
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1)
    elif loss_type == "dapo":
        denom = mask.sum() if num_tokens is None else num_tokens
        loss = (per_token * mask).sum() / torch.as_tensor(denom, dtype=per_token.dtype).clamp(min=1)
    else:
        L = mask.size(1) if max_completion_len is None else max_completion_len
        loss = (per_token * mask).sum() / (mask.size(0) * L)
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        clipped_low = ((ratio < 1 - eps_low) & (A < 0)).float()
        clipped_high = ((ratio > 1 + eps_high) & (A > 0)).float()
        stats = {
            "clip_frac_low": (clipped_low * mask).sum() / n,
            "clip_frac_high": (clipped_high * mask).sum() / n,
            "clip_frac": ((clipped_low + clipped_high) * mask).sum() / n,
            "ratio_mean": (ratio * mask).sum() / n,
            "pg_loss": (pg_loss * mask).sum() / n,
        }
        if ref_logp is not None:
            stats["kl"] = (kl * mask).sum() / n
    return loss, stats


def loop_variant(logp, old, ref, adv, mask, *, lo=0.2, hi=0.2, beta=0.04, loss_type="grpo", L=5, level="token",
                 eps_max=5.0, delta=None, H=None, rho=1.0, coef=0.0):  # fmt: skip
    """Every variant one token at a time, on 0-dim tensors so that autograd gives the oracle's gradient too.
    The formulas of grpo.py's docstring, written out: no broadcasting, no masks multiplied in."""
    N, T = mask.shape
    real = [[t for t in range(T) if mask[i, t] == 1] for i in range(N)]
    tau = None
    if rho < 1:  # the (1 - rho)-quantile of the real tokens' entropies, linear interpolation (as torch)
        vals = sorted(H[i, t].item() for i in range(N) for t in real[i])
        pos = (1 - rho) * (len(vals) - 1)
        k = math.floor(pos)
        tau = vals[k] + (vals[min(k + 1, len(vals) - 1)] - vals[k]) * (pos - k)
    rows = []  # per completion, its per-token terms
    for i in range(N):
        if level == "sequence":  # GSPO: s_i = exp(mean of the completion's log-ratios)
            s_i = torch.exp(sum(logp[i, t] - old[i, t] for t in real[i]) / len(real[i]))
        terms = []
        for t in real[i]:
            r = s_i if level == "sequence" else torch.exp(logp[i, t] - old[i, t])
            a = adv[i]
            if loss_type == "cispo":  # sg(min(r, eps_max)) * A * log pi
                pg = -min(r.item(), eps_max) * a * logp[i, t]
            else:
                r1 = r if delta is None or r.item() <= delta else torch.tensor(delta)  # min(r, delta)
                pg = -torch.minimum(r1 * a, torch.clamp(r, 1 - lo, 1 + hi) * a)
            if tau is not None and H[i, t].item() < tau:
                pg = 0.0 * pg  # not a forking token: no policy gradient
            d = ref[i, t] - logp[i, t]
            terms.append(pg + beta * (torch.exp(d) - d - 1))
        rows.append(terms)
    n_tokens = sum(len(x) for x in rows)
    if loss_type == "grpo":
        loss = sum(sum(x) / len(x) for x in rows) / N
    elif loss_type in ("bnpo", "dapo", "cispo"):
        loss = sum(sum(x) for x in rows) / n_tokens
    else:
        loss = sum(sum(x) for x in rows) / (N * L)
    if coef:
        loss = loss - coef * sum(H[i, t] for i in range(N) for t in real[i]) / n_tokens
    return loss


VARIANTS = {  # name: keyword arguments of grpo_loss
    "gspo": dict(importance_level="sequence"),
    "gspo_dapo": dict(importance_level="sequence", loss_type="dapo"),
    "gspo_dr_grpo": dict(importance_level="sequence", loss_type="dr_grpo"),
    "gspo_wide_clip": dict(importance_level="sequence", clip_eps=0.05, clip_eps_high=0.08),
    "cispo": dict(loss_type="cispo"),
    "cispo_capped": dict(loss_type="cispo", cispo_eps_max=1.3),
    "cispo_sequence": dict(loss_type="cispo", importance_level="sequence", cispo_eps_max=1.02),
    "delta": dict(delta=1.5),
    "delta_bnpo_clip_high": dict(delta=1.4, clip_eps_high=0.28, loss_type="bnpo"),
    "top_entropy": dict(top_entropy_quantile=0.4),
    "top_entropy_cispo": dict(top_entropy_quantile=0.25, loss_type="cispo"),
    "entropy_bonus": dict(entropy_coef=0.1),
    "all_at_once": dict(importance_level="sequence", delta=1.5, top_entropy_quantile=0.5, entropy_coef=0.05),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variants_match_loop(name):
    """Loss and gradient (through logp and the entropy) of every variant against loop_variant."""
    kw = VARIANTS[name]
    logp, old, ref, adv, mask = random_batch(spread=1.0)
    H = torch.rand(6, 5, generator=torch.Generator().manual_seed(3)) * 2  # distinct entropies
    logp.requires_grad_(True)
    H.requires_grad_(True)
    loss, _ = grpo_loss(logp, old, ref, adv, mask, max_completion_len=5, entropy=H, **kw)
    g_logp, g_H = torch.autograd.grad(loss, (logp, H), allow_unused=True)
    lo, hi = clip_range(kw.get("importance_level", "token"), kw.get("clip_eps"), kw.get("clip_eps_high"))
    expected = loop_variant(
        logp, old, ref, adv, mask, lo=lo, hi=hi, loss_type=kw.get("loss_type", "grpo"),
        level=kw.get("importance_level", "token"), eps_max=kw.get("cispo_eps_max", 5.0), delta=kw.get("delta"),
        H=H, rho=kw.get("top_entropy_quantile", 1.0), coef=kw.get("entropy_coef", 0.0),
    )  # fmt: skip
    e_logp, e_H = torch.autograd.grad(expected, (logp, H), allow_unused=True)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    assert torch.allclose(g_logp, e_logp, atol=1e-6)
    if "entropy_coef" in kw:
        assert torch.allclose(g_H, e_H, atol=1e-7)
    else:  # the entropy only selects tokens: no gradient through it
        assert g_H is None and e_H is None


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("with_ref", [True, False])
def test_defaults_give_exactly_the_old_loss(loss_type, with_ref):
    """Bit for bit: loss, gradient and every stat of today's grpo_loss at its defaults, also when the entropy
    is passed (top_entropy_quantile = 1 and entropy_coef = 0 do not use it)."""
    logp, old, ref, adv, mask = random_batch(spread=1.0)
    logp.requires_grad_(True)
    ref = ref if with_ref else None
    beta = 0.04 if with_ref else 0.0
    for kw in [dict(), dict(clip_eps=0.1, clip_eps_high=0.3, num_tokens=40, max_completion_len=9)]:
        want, want_stats = old_grpo_loss(logp, old, ref, adv, mask, beta=beta, loss_type=loss_type, **kw)
        (want_g,) = torch.autograd.grad(want, logp)
        for extra in [dict(), dict(entropy=torch.rand(6, 5))]:
            got, stats = grpo_loss(logp, old, ref, adv, mask, beta=beta, loss_type=loss_type, **kw, **extra)
            (got_g,) = torch.autograd.grad(got, logp)
            assert torch.equal(got, want) and torch.equal(got_g, want_g)
            assert stats.keys() == want_stats.keys()
            assert all(torch.equal(stats[k], want_stats[k]) for k in stats), kw


def test_gspo_mu1_gradient_is_length_normalised_reinforce():
    """At mu = 1 s_i == 1 and the gradient is -1/N sum_i A_i * 1/|o_i| sum_t grad log pi(o_it)."""
    torch.manual_seed(0)
    W = torch.randn(8, 11, requires_grad=True)  # a tiny "policy": logits = x @ W
    x = torch.randn(6, 5, 8)
    tokens = torch.randint(0, 11, (6, 5))
    _, _, ref, adv, mask = random_batch()
    logp = per_token_logps(x @ W, tokens)
    loss, stats = grpo_loss(logp, logp.detach(), ref, adv, mask, beta=0.0, importance_level="sequence")
    (g_gspo,) = torch.autograd.grad(loss, W)
    assert stats["ratio_mean"].item() == 1.0 and stats["clip_frac"].item() == 0.0
    logp = per_token_logps(x @ W, tokens)
    reinforce = sum(-adv[i] * sum(logp[i, t] for t in range(5) if mask[i, t]) / mask[i].sum() for i in range(6)) / 6
    (g_ref,) = torch.autograd.grad(reinforce, W)
    assert torch.allclose(g_gspo, g_ref, atol=1e-6)


def test_cispo_mu1_gradient_is_token_normalised_reinforce():
    """At mu = 1 the weight is 1 and the gradient is -sum_it A_i grad log pi(o_it) / sum_i |o_i|: the same
    as GRPO's "dapo" there, not as "grpo" (ragged lengths), and not what an undetached weight would give."""
    torch.manual_seed(0)
    W = torch.randn(8, 11, requires_grad=True)
    x = torch.randn(6, 5, 8)
    tokens = torch.randint(0, 11, (6, 5))
    _, _, ref, adv, mask = random_batch()
    grads = {}
    for lt in ["cispo", "dapo", "grpo"]:
        logp = per_token_logps(x @ W, tokens)
        loss, _ = grpo_loss(logp, logp.detach(), ref, adv, mask, beta=0.0, loss_type=lt)
        (grads[lt],) = torch.autograd.grad(loss, W)
    logp = per_token_logps(x @ W, tokens)
    reinforce = sum(-adv[i] * logp[i, t] for i in range(6) for t in range(5) if mask[i, t]) / mask.sum()
    (g_ref,) = torch.autograd.grad(reinforce, W)
    assert torch.allclose(grads["cispo"], g_ref, atol=1e-6) and torch.allclose(grads["dapo"], g_ref, atol=1e-6)
    assert not torch.allclose(grads["grpo"], g_ref, atol=1e-4)


def test_cispo_keeps_the_gradient_ppo_clips():
    """Tokens whose ratio left PPO's range get no gradient from the clipped surrogate; under CISPO each keeps
    -min(r, eps_max) * A / n, hand-computed (d/dlogp of -w * A * logp with w a constant)."""
    ratios, A = [1.5, 0.5, 10.0, 1.0], torch.tensor([1.0, -1.0, 2.0, -0.5])
    logp = torch.tensor([[exact_log(r)] for r in ratios], requires_grad=True)
    zeros, ones = torch.zeros(4, 1), torch.ones(4, 1)
    ppo, _ = grpo_loss(logp, zeros, None, A, ones, beta=0.0)
    (g_ppo,) = torch.autograd.grad(ppo, logp)
    assert g_ppo[0, 0] == 0 and g_ppo[1, 0] == 0 and g_ppo[2, 0] == 0  # all three clipped
    cispo, stats = grpo_loss(logp, zeros, None, A, ones, beta=0.0, loss_type="cispo", cispo_eps_max=5.0)
    (g,) = torch.autograd.grad(cispo, logp)
    expected = [-min(r, 5.0) * a / 4 for r, a in zip(ratios, A.tolist(), strict=True)]
    assert torch.allclose(g.flatten(), torch.tensor(expected), atol=1e-6)
    assert stats["clip_frac"].item() == 0.25 and stats["clip_frac_low"].item() == 0.0  # ratio 10 > 5: capped


def test_gspo_clips_whole_completions_with_its_small_eps():
    """One ratio per completion: a completion whose mean log-ratio leaves [log(1 - 3e-4), log(1 + 4e-4)] in
    the direction of its advantage loses the gradient of every token, even of a token whose own ratio is 1;
    one inside keeps -A_i * s_i / |o_i| on each token (the "grpo" mean, N = 2)."""
    assert clip_range("sequence") == (3e-4, 4e-4) and clip_range("token") == (0.2, 0.2)
    assert clip_range("sequence", 0.01) == (0.01, 0.01) and clip_range("token", None, 0.28) == (0.2, 0.28)
    old = torch.zeros(2, 3)
    logp = torch.tensor([[3e-3, 0.0, 0.0], [1e-4, -2e-4, 2e-4]], requires_grad=True)  # means 1e-3 and 3.3e-5
    A = torch.tensor([1.0, 1.0])
    loss, stats = grpo_loss(logp, old, None, A, torch.ones(2, 3), beta=0.0, importance_level="sequence")
    (g,) = torch.autograd.grad(loss, logp)
    assert torch.equal(g[0], torch.zeros(3))  # s_0 = exp(1e-3) > 1 + 4e-4: clipped as a whole
    s1 = math.exp(1e-4 / 3)
    assert torch.allclose(g[1], torch.full((3,), -s1 / 3 / 2), atol=1e-7)
    assert stats["clip_frac_high"].item() == pytest.approx(0.5)  # 3 of the 6 tokens
    with pytest.raises(ValueError, match="importance_level"):
        grpo_loss(logp, old, None, A, torch.ones(2, 3), beta=0.0, importance_level="seq")


def test_delta_caps_the_loss_of_negative_advantages():
    """A token whose probability exploded (ratio e^10) with A = -1: the clipped surrogate's loss is the ratio
    itself, with delta it is delta and the token has no gradient; for A > 0 delta changes nothing."""
    logp = torch.tensor([[10.0], [math.log(1.3)], [-10.0]], requires_grad=True)
    old, ones = torch.zeros(3, 1), torch.ones(3, 1)
    neg = torch.tensor([-1.0, -1.0, -1.0])
    plain, _ = grpo_loss(logp[:1], old[:1], None, neg[:1], ones[:1], beta=0.0)
    assert plain.item() == pytest.approx(math.exp(10.0), rel=1e-5)
    capped, _ = grpo_loss(logp, old, None, neg, ones, beta=0.0, delta=2.0)
    (g,) = torch.autograd.grad(capped, logp)
    # per token: min(r, 2) for r = e^10; r = 1.3 is below delta: unchanged; r = e^-10: clipped at 0.8
    assert capped.item() == pytest.approx((2.0 + 1.3 + 0.8) / 3, rel=1e-6)
    assert g[0, 0] == 0 and g[1, 0] == pytest.approx(1.3 / 3, rel=1e-5) and g[2, 0] == 0
    logp2, old2, _, _, mask = random_batch(spread=2.0)
    pos = torch.rand(6) + 0.1
    a = grpo_loss(logp2, old2, None, pos, mask, beta=0.0)[0]
    b = grpo_loss(logp2, old2, None, pos, mask, beta=0.0, delta=1.21)[0]
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="delta must exceed"):
        grpo_loss(logp, old, None, neg, ones, beta=0.0, delta=1.2)  # not above 1 + eps_high
    with pytest.raises(ValueError, match="cispo"):
        grpo_loss(logp, old, None, neg, ones, beta=0.0, delta=2.0, loss_type="cispo")


def test_clip_frac_counts_tokens_capped_by_delta():
    """Issue 18: logp 3, old 0, A = -1, delta 2: the ratio e^3 is capped, the token has no gradient, and it
    counts in clip_frac (and clip_frac_delta); a token below the cap and a token with A > 0 above it do not."""
    logp = torch.tensor([[3.0], [math.log(1.5)], [3.0]], requires_grad=True)
    A = torch.tensor([-1.0, -1.0, 1.0])
    zeros, ones = torch.zeros(3, 1), torch.ones(3, 1)
    loss, stats = grpo_loss(logp, zeros, None, A, ones, beta=0.0, delta=2.0)
    (g,) = torch.autograd.grad(loss, logp)
    assert g[0, 0] == 0 and g[1, 0] != 0 and g[2, 0] == 0  # capped; inside; clipped high (A > 0)
    assert stats["clip_frac_delta"].item() == pytest.approx(1 / 3)
    assert stats["clip_frac_high"].item() == pytest.approx(1 / 3) and stats["clip_frac_low"].item() == 0
    assert stats["clip_frac"].item() == pytest.approx(2 / 3)  # every token without a gradient, once
    _, alone = grpo_loss(logp[:1], zeros[:1], None, A[:1], ones[:1], beta=0.0, delta=2.0)
    assert alone["clip_frac"].item() == 1.0


def test_truncated_reads_the_end_token_not_the_mask():
    eos = 9
    tokens = torch.tensor([[5, 6, 7, 8], [5, 6, 7, eos], [eos, eos, eos, eos], [5, eos, eos, eos]])
    assert truncated(tokens, eos).tolist() == [True, False, False, False]
    # the first two rows both have an all-ones mask; only the first never ended
    assert completion_mask(tokens, eos)[:2].eq(1).all()


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo", "cispo"])
def test_masking_truncated_completions_removes_them(loss_type):
    """The driver's --mask-truncated: mask * ~truncated. The dropped rows get no gradient (policy term and KL
    alike) and the loss is the kept rows' own, with N still counting every row under grpo and dr_grpo."""
    eos = 9
    logp, old, ref, adv, _ = random_batch(spread=1.0)
    tokens = torch.tensor([[1, 2, eos, 0, 0], [1, 2, 3, 4, 5], [eos, 0, 0, 0, 0], [3, 3, 3, 3, eos],
                           [4, 4, 4, 4, 4], [1, eos, 0, 0, 0]])  # fmt: skip
    mask = completion_mask(tokens, eos)
    cut = truncated(tokens, eos)
    assert cut.tolist() == [False, True, False, False, True, False]
    logp.requires_grad_(True)
    loss, _ = grpo_loss(logp, old, ref, adv, mask * ~cut[:, None], loss_type=loss_type)
    (g,) = torch.autograd.grad(loss, logp)
    assert torch.all(g[cut] == 0) and torch.all(g[~cut][mask[~cut] == 1] != 0)
    keep = ~cut
    kept, _ = grpo_loss(logp[keep], old[keep], ref[keep], adv[keep], mask[keep], loss_type=loss_type,
                        max_completion_len=5)  # fmt: skip
    scale = {"grpo": 4 / 6, "dr_grpo": 4 / 6}.get(loss_type, 1.0)  # 4 of 6 rows kept
    assert loss.item() == pytest.approx(kept.item() * scale, rel=1e-6)


def test_top_entropy_keeps_the_policy_gradient_on_high_entropy_tokens_only():
    """rho = 0.25 of 20 real tokens with distinct entropies: the policy gradient lives on the 5 largest
    (tau interpolates between the 15th and 16th), the KL gradient on all 20."""
    logp, old, ref, adv, mask = random_batch(spread=0.1)
    H = torch.rand(6, 5, generator=torch.Generator().manual_seed(5))
    real = mask == 1
    top = H >= H[real].sort().values[-5]  # the 5 highest real entropies
    top &= real
    assert real.sum() == 20 and top.sum() == 5
    logp.requires_grad_(True)
    for beta, on in [(0.0, top), (0.04, real)]:
        loss, _ = grpo_loss(logp, old, ref, adv, mask, beta=beta, entropy=H, top_entropy_quantile=0.25)
        (g,) = torch.autograd.grad(loss, logp)
        assert torch.equal(g != 0, on), beta
    flat = torch.full((6, 5), 0.7)  # ties (e.g. deterministic positions): H >= tau keeps them all
    same = grpo_loss(logp, old, ref, adv, mask, entropy=flat, top_entropy_quantile=0.25)[0]
    assert same.item() == grpo_loss(logp, old, ref, adv, mask)[0].item()
    H[~real] = 100.0  # padding never counts, however high its entropy
    loss2, _ = grpo_loss(logp, old, ref, adv, mask, beta=0.04, entropy=H, top_entropy_quantile=0.25)
    assert loss2.item() == loss.item()
    with pytest.raises(ValueError, match="entropy"):
        grpo_loss(logp, old, ref, adv, mask, top_entropy_quantile=0.25)
    with pytest.raises(ValueError, match="top_entropy_quantile"):
        grpo_loss(logp, old, ref, adv, mask, entropy=H, top_entropy_quantile=0.0)


def test_entropy_bonus_is_minus_coef_times_the_masked_entropy():
    """loss(c) = loss(0) - c * H and grad loss(c) = grad loss(0) - c * grad H, with H the true masked entropy
    of entropy_from_logits, differentiated through the full logits."""
    torch.manual_seed(0)
    logits = (torch.randn(6, 5, 7) * 2).requires_grad_(True)
    tokens = torch.randint(0, 7, (6, 5))
    _, old, ref, adv, mask = random_batch()
    c = 0.3

    def loss_at(coef):
        logp = per_token_logps(logits, tokens)
        loss, _ = grpo_loss(logp, old, ref, adv, mask, entropy=token_entropy(logits), entropy_coef=coef)
        return loss, torch.autograd.grad(loss, logits)[0]

    (l0, g0), (lc, gc) = loss_at(0.0), loss_at(c)
    H = entropy_from_logits(logits, mask)
    (gH,) = torch.autograd.grad(H, logits)
    assert lc.item() == pytest.approx(l0.item() - c * H.item(), rel=1e-6)
    assert torch.allclose(gc - g0, -c * gH, atol=1e-6)
    assert (gH[mask == 0] == 0).all() and (gH[mask == 1] != 0).any()  # padding has no entropy to reward


# -----------------------------------------------------------------------------
# train_grpo.py with each new flag: 2 steps on the tiny SFT policy (conftest.sft_dir)

SMALL = ["--steps", 2, "--batch-size", 4, "--group-size", 4, "--eval-every", 2, "--no-progress", *TINY]


def csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))[1:]  # after the step-0 row


@pytest.mark.parametrize(
    "flags",
    [
        ["--importance-level", "sequence", "--num-iterations", 2, "--delta", 1.5, "--lr", 1e-2],
        ["--loss-type", "cispo", "--top-entropy-quantile", 0.2, "--entropy-coef", 0.01, "--num-iterations", 2],
    ],
    ids=["gspo_delta", "cispo_top_entropy_bonus"],
)
def test_driver_runs_the_new_objectives(sft_dir, flags):
    log = sft_dir / "g.csv"
    p = run("train_grpo.py", "--out-dir", sft_dir, "--log", log, *SMALL, *flags)
    assert p.returncode == 0, p.stderr
    r = csv_rows(log)
    assert len(r) == 2 and all(math.isfinite(float(x["loss"])) and float(x["grad_norm"]) > 0 for x in r)
    if "sequence" in flags:  # mu = 2 at lr 1e-2 moves whole completions past GSPO's 4e-4
        assert any(float(x["clip_frac"]) > 0 for x in r)


def test_driver_mask_truncated(sft_dir):
    """One-token completions earn nothing (advantages 0), so at --beta 0 the loss is the entropy bonus alone:
    -c * the entropy of every real token without --mask-truncated (the entropy column), of the completions
    that ended only (a one-token completion that is the end token) with it. Bad combinations are refused."""
    c, logs = 0.1, {}
    for flag in ([], ["--mask-truncated"]):
        logs[bool(flag)] = log = sft_dir / f"m{len(flag)}.csv"
        extra = ["--max-new-tokens", 1, "--beta", 0, "--entropy-coef", c, *flag]
        p = run("train_grpo.py", "--out-dir", sft_dir, "--log", log, *SMALL, *extra)
        assert p.returncode == 0, p.stderr
    for x in csv_rows(logs[False]):
        assert float(x["loss"]) == pytest.approx(-c * float(x["entropy"]), rel=1e-4)
    assert any(float(x["loss"]) != pytest.approx(-c * float(x["entropy"]), rel=1e-3) for x in csv_rows(logs[True]))
    p = run("train_grpo.py", "--task", "shakespeare", "--mask-truncated", "--out-dir", sft_dir, *SMALL)
    assert p.returncode == 2 and "no end token" in p.stderr and "Traceback" not in p.stderr
    p = run("train_grpo.py", "--delta", 1.1, "--out-dir", sft_dir, *SMALL)  # not above 1 + 0.2
    assert p.returncode == 2 and "--delta must exceed" in p.stderr


# -----------------------------------------------------------------------------
# edges the mutation run found untested (tools/mutation.sh, issue 18)


def test_defaults_of_the_descendants_and_their_checks():
    """cispo_eps_max defaults to 5.0 (ScaleRL, as TRL); top_entropy_quantile must lie in (0, 1]; the delta
    error says the bound it was checked against (1 + eps_high)."""
    assert inspect.signature(grpo_loss).parameters["cispo_eps_max"].default == 5.0
    logp, old, ref, adv, mask = random_batch()
    for rho in (0.0, 1.5, 2.0):
        with pytest.raises(ValueError, match="top_entropy_quantile"):
            grpo_loss(logp, old, ref, adv, mask, top_entropy_quantile=rho, entropy=torch.rand(6, 5))
    with pytest.raises(ValueError, match=r"1 \+ eps_high = 1.3, got 1.25"):
        grpo_loss(logp, old, ref, adv, mask, clip_eps_high=0.3, delta=1.25)


def test_entropy_bonus_on_one_real_token():
    """One real token: the bonus is -c * H of that token (a count of 1 is divided by 1, not clamped higher)."""
    logp = torch.zeros(1, 3, requires_grad=True)
    H = torch.tensor([[2.0, 5.0, 7.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 0.0, 0.0]])
    loss, _ = grpo_loss(logp, logp.detach(), None, torch.zeros(1), mask, beta=0.0, entropy=H, entropy_coef=0.1)
    assert loss.item() == pytest.approx(-0.2)


def test_capped_counts_exactly_the_tokens_without_gradient():
    """clip_frac_delta: A < 0 and ratio > delta strictly. On the cap (ratio == delta) the token keeps its
    gradient; A = 0 and A > 0 are never capped; a padded token is never counted."""
    ratios = [2.0, 8.0, 8.0, 8.0, 8.0]
    A = torch.tensor([-1.0, 0.0, 0.5, -1.0, -1.0])
    logp = torch.tensor([[exact_log(r)] for r in ratios], requires_grad=True)
    mask = torch.tensor([[1.0], [1.0], [1.0], [1.0], [0.0]])  # the last token is padding
    loss, stats = grpo_loss(logp, torch.zeros(5, 1), None, A, mask, beta=0.0, delta=2.0)
    (g,) = torch.autograd.grad(loss, logp)
    assert g[0, 0] != 0 and g[3, 0] == 0  # on the cap: a gradient; above it: none
    assert stats["clip_frac_delta"].item() == pytest.approx(1 / 4)  # token 3 alone, over 4 real tokens
    assert torch.isfinite(stats["clip_frac_delta"])


def test_cispo_counts_weights_strictly_above_the_cap():
    """A weight exactly at eps_max is not capped (min(r, eps_max) == r); above it, it is."""
    logp = torch.tensor([[exact_log(5.0)], [exact_log(6.0)]], requires_grad=True)
    _, stats = grpo_loss(logp, torch.zeros(2, 1), None, torch.ones(2), torch.ones(2, 1), beta=0.0, loss_type="cispo")
    assert stats["clip_frac"].item() == 0.5

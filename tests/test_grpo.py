"""grpo.py against hand-computed values and against plain-loop implementations written to be obvious."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import exact_log

from grpo import completion_mask, entropy_from_logits, group_advantages, grpo_loss, per_token_logps

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
# log-probs, entropy, mask


def test_per_token_logps_equals_cross_entropy():
    logits = torch.randn(3, 4, 7) * 3
    tokens = torch.randint(0, 7, (3, 4))
    expected = -F.cross_entropy(logits.reshape(-1, 7), tokens.reshape(-1), reduction="none").view(3, 4)
    assert torch.allclose(per_token_logps(logits, tokens), expected, atol=1e-5)


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

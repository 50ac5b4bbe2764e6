"""
GRPO loss functions: the tutorial file of nanoGRPO. Pure functions, tensors in, (loss, stats) out.

GRPO = Group Relative Policy Optimization (Shao et al., "DeepSeekMath", arXiv:2402.03300, section 4.1;
used for DeepSeek-R1, arXiv:2501.12948). Read it top to bottom next to the paper.

The objective
-------------
For each prompt q we sample a *group* of G completions o_1..o_G from the policy that collected the data,
pi_old, and score each with a reward r_i. PPO would learn a value network to tell good from bad
actions; GRPO replaces it with the group itself. The advantage of every token of completion i is

    A_i = (r_i - mean(r_1..r_G)) / std(r_1..r_G)                           (outcome supervision, 4.1.2)

and the policy pi_theta maximises the clipped surrogate of PPO (Schulman et al. 2017) minus a KL
penalty to a frozen reference policy pi_ref (the SFT model):

    J(theta) = E_q E_{o_i ~ pi_old} [ 1/G sum_i 1/|o_i| sum_t {
                  min( ratio_it * A_i, clip(ratio_it, 1 - eps, 1 + eps) * A_i )
                  - beta * D_KL[pi_theta || pi_ref]_it } ]                 (DeepSeekMath eq. 3)

    ratio_it = pi_theta(o_it | q, o_i<t) / pi_old(o_it | q, o_i<t)

The KL term is not added to the reward (as in RLHF-PPO) but to the loss, per token, with the k3
estimator of Schulman ("Approximating KL divergence", 2020), DeepSeekMath eq. 4:

    k3 = pi_ref / pi_theta - log(pi_ref / pi_theta) - 1  =  exp(ref - logp) - (ref - logp) - 1

k3 >= 0 for every sample (x - log x - 1 >= 0), is 0 exactly when the two log-probs agree, and is an
unbiased estimate of KL(pi_theta || pi_ref) for tokens sampled from pi_theta. (The original nanoGRPO
description used the sequence sum logp - ref, k1, whose *gradient* has expectation zero: a KL
penalty that does not penalise.)

We minimise loss = -J. With mu = 1 update per rollout (--num-iterations 1) pi_theta == pi_old when the
gradient is taken, so ratio == 1, nothing is clipped and the gradient is exactly REINFORCE with a
group baseline, -A_i * grad log pi_theta(o_it). With mu > 1 the same rollout is reused and the clip
keeps later updates close to pi_old, as in PPO.

The choices, and where they come from
-------------------------------------
scale (group_advantages):
    "group"  divide by the group's std (DeepSeekMath; unbiased std, as torch.std and TRL do).
    "batch"  divide by the std of the whole batch (Hu et al., REINFORCE++ style; avoids blowing up
             groups with a tiny spread).
    "none"   only subtract the group mean (Liu et al. 2025, "Understanding R1-Zero-Like Training",
             Dr. GRPO: the std division over-weights prompts that are too easy or too hard).
loss_type (grpo_loss), how per-token terms become one number:
    "grpo"     mean over completions of each completion's token mean (the paper's 1/G sum 1/|o_i|);
               short completions weigh more per token, which biases length (Dr. GRPO, section 3.1).
    "bnpo"     masked sum / number of real tokens in this batch (one token, one vote). Under DDP "this
               batch" is the rank's own (TRL's definition): DDP then averages per-rank token means, which
               is not the one-process token mean when ranks hold different token counts; that gap is
               exactly what "dapo" closes, the only difference between the two.
    "dapo"     the same on the *global* token count: under DDP pass the all-reduced count
               (Yu et al. 2025, "DAPO", token-level policy gradient loss). With 1 process, bnpo == dapo.
    "dr_grpo"  masked sum / (N * max_completion_len): a constant normaliser, no length bias.
clip_eps_high: DAPO's "clip-higher": a larger upper clip (e.g. 0.28) so that unlikely tokens can grow.
Dynamic sampling (DAPO) lives in the driver: groups whose rewards are all equal have A = 0 and teach
nothing, so they are dropped and more prompts sampled.

Shapes: B prompts, G group size, N = B*G completions, T completion tokens, V vocabulary.
"""

import torch
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# advantages


def group_advantages(rewards, group_size, scale="group", eps=1e-4):
    """Group-relative advantages (DeepSeekMath 4.1.2, outcome supervision).

    rewards: (N,) float, N = B*G; the G completions of prompt b sit at rows b*G:(b+1)*G.
    scale: "group" | "batch" | "none", see the module docstring.
    Returns (N,): r - group mean, divided by (group std + eps), (batch std + eps) or nothing.
    A group whose rewards are all equal gets exactly 0 (its numerator is 0), never NaN.
    """
    N = rewards.numel()
    if group_size < 2 or N % group_size != 0:
        raise ValueError(f"need group_size >= 2 dividing N; got N={N}, group_size={group_size}")
    r = rewards.float().view(-1, group_size)  # (B, G)
    centred = r - r.mean(dim=1, keepdim=True)  # (B, G) r_i - mean(r_group)
    if scale == "group":
        adv = centred / (r.std(dim=1, keepdim=True) + eps)  # unbiased std (G - 1), as in TRL
    elif scale == "batch":
        adv = centred / (r.std() + eps)  # one std over all N rewards
    elif scale == "none":
        adv = centred  # Dr. GRPO: no std division
    else:
        raise ValueError(f"unknown scale {scale!r}; expected 'group', 'batch' or 'none'")
    return adv.view(-1)  # (N,)


# -----------------------------------------------------------------------------
# log-probs, entropy, masks


def per_token_logps(logits, tokens):
    """log pi(tokens) under logits, without materialising a (N, T, V) log_softmax copy.

    logits: (N, T, V) float, tokens: (N, T) long. Returns (N, T) float.
    log_softmax(x)[y] = x[y] - logsumexp(x); gather first, then subtract (TRL's selective_log_softmax).
    """
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (N, T)
    return picked - torch.logsumexp(logits, dim=-1)  # (N, T)


def entropy_from_logits(logits, mask):
    """True entropy H = -sum_v p_v log p_v of the full distribution at each position, masked mean.

    logits: (N, T, V), mask: (N, T). Returns a scalar. (Not -log p of the sampled token: that is a
    one-sample estimate whose mean equals H only in expectation, and was mislabelled in the original.)
    """
    logp = F.log_softmax(logits.float(), dim=-1)  # (N, T, V)
    H = -(logp.exp() * logp).sum(-1)  # (N, T)
    m = mask.float()
    return (H * m).sum() / m.sum().clamp(min=1)


def completion_mask(tokens, eos_id):
    """1 for real completion tokens: everything up to and including the first end token, 0 after.

    tokens: (N, T) long. Returns (N, T) float. A row with no end token is all ones: it was truncated
    at max_new_tokens, its tokens were still sampled by the policy, so they stay in the loss (the
    reward functions give such a completion nothing, which is what teaches the policy to stop).
    """
    is_eos = (tokens == eos_id).long()
    before = is_eos.cumsum(dim=1) - is_eos  # number of end tokens strictly before t
    return (before == 0).float()  # (N, T)


# -----------------------------------------------------------------------------
# the loss


def grpo_loss(
    logp,
    old_logp,
    ref_logp,
    advantages,
    mask,
    *,
    clip_eps=0.2,
    clip_eps_high=None,
    beta=0.04,
    loss_type="grpo",
    max_completion_len=None,
    num_tokens=None,
):
    """Clipped GRPO surrogate with a per-token k3 KL penalty (DeepSeekMath eq. 3), as a loss.

    logp:       (N, T) log pi_theta of the sampled tokens, with gradient
    old_logp:   (N, T) log pi_old, the policy that sampled them (detached)
    ref_logp:   (N, T) log pi_ref, the frozen reference (detached); None with beta = 0, when the
                reference forward can be skipped (as TRL does): then there is no "kl" in stats
    advantages: (N,)   one per completion, broadcast over its tokens
    mask:       (N, T) 1 for real completion tokens, 0 for what follows the end token
    loss_type:  "grpo" | "bnpo" | "dapo" | "dr_grpo", see the module docstring
    max_completion_len: the T of "dr_grpo"'s constant normaliser (defaults to mask.size(1))
    num_tokens: "dapo" only: the token count to divide by; under DDP the all-reduced global count
                (each rank's loss is then sum/global, and DDP's gradient *mean* over W ranks must be
                undone by the caller multiplying by W, see train_grpo.py). Default: this batch's count.
    Returns (loss, stats); stats are detached scalars.
    """
    if ref_logp is None and beta != 0:
        raise ValueError(f"ref_logp is needed for the KL term (beta={beta}); only beta=0 may omit it")
    old_logp, advantages = old_logp.detach(), advantages.detach()
    mask = mask.float()
    eps_low = clip_eps
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    A = advantages.unsqueeze(1)  # (N, 1), the same advantage for every token of a completion

    # clipped surrogate (PPO eq. 7), per token
    logratio = logp - old_logp  # (N, T)
    ratio = torch.exp(logratio)  # (N, T)
    pg_loss1 = -ratio * A
    pg_loss2 = -torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * A
    pg_loss = torch.max(pg_loss1, pg_loss2)  # = -min(ratio*A, clip(ratio)*A)

    # k3 KL estimator to the reference, per token (DeepSeekMath eq. 4); >= 0 by x - log x - 1 >= 0
    per_token = pg_loss  # (N, T)
    if ref_logp is not None:
        d = ref_logp.detach() - logp  # (N, T)
        kl = torch.exp(d) - d - 1
        per_token = pg_loss + beta * kl

    # aggregation: the normaliser is the whole difference between the variants
    if loss_type == "grpo":
        per_seq = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)  # (N,) token mean per completion
        loss = per_seq.mean()
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1)
    elif loss_type == "dapo":
        denom = mask.sum() if num_tokens is None else num_tokens
        loss = (per_token * mask).sum() / torch.as_tensor(denom, dtype=per_token.dtype).clamp(min=1)
    elif loss_type == "dr_grpo":
        L = mask.size(1) if max_completion_len is None else max_completion_len
        loss = (per_token * mask).sum() / (mask.size(0) * L)
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected grpo, bnpo, dapo or dr_grpo")

    # diagnostics, masked means over real tokens
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        clipped_low = ((ratio < 1 - eps_low) & (A < 0)).float()  # clip is active: no gradient
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

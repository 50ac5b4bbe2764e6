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

Descendants of the objective (keyword arguments of grpo_loss, each off by default)
-------------------------------------------------------------------------------
importance_level="sequence": GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization",
arXiv:2507.18071, section 4.1). One importance ratio per completion, the geometric mean of its token ratios,
clipped per completion:

    s_i = (pi_theta(o_i | q) / pi_old(o_i | q))^(1/|o_i|) = exp( 1/|o_i| sum_t (logp_it - old_logp_it) )
    J_GSPO = E [ 1/G sum_i min( s_i * A_i, clip(s_i, 1 - eps, 1 + eps) * A_i ) ]

    s_i is a mean of |o_i| log-ratios, so it stays close to 1 and its eps is small: 3e-4 below, 4e-4 above
    (GSPO section 5.1), the defaults at this level (clip_range). The term is the same for every token of o_i
    and is aggregated by loss_type like any other ("grpo" gives the paper's 1/G sum_i); the KL stays per token.
    At mu = 1 s_i == 1 and grad s_i = 1/|o_i| sum_t grad logp_it: the gradient is GRPO's, a length-normalised
    REINFORCE. The two differ only off-policy (mu > 1), where GSPO clips whole completions.
loss_type="cispo": CISPO (MiniMax-M1, arXiv:2506.13585, section 3.1). Clip the importance weight, not the
update, and stop its gradient (sg):

    r_it = pi_theta(o_it | q, o_i<t) / pi_old(o_it | q, o_i<t)          (or s_i at importance_level="sequence")
    w_it = sg( min(r_it, eps_max) )                                      (no lower bound, as in the paper)
    J_CISPO = E [ 1/(sum_i |o_i|) sum_i sum_t w_it * A_i * log pi_theta(o_it | q, o_i<t) ]

    PPO's clip takes the gradient away from a token whose ratio left the range (often a rare "fork" token);
    here every token keeps its REINFORCE gradient, weighted by at most eps_max (cispo_eps_max = 5.0, the value
    TRL recommends from ScaleRL, arXiv:2510.13786). The normaliser is the token count, as "dapo" (num_tokens
    too). At mu = 1 w == 1: the gradient is REINFORCE with token-level normalisation. In stats, clip_frac
    counts the tokens whose weight was capped, which unlike PPO's keep their gradient.
delta: two-sided clipping (INTELLECT-2, arXiv:2505.07291):

    J = E [ min( min(r_it, delta) * A_i, clip(r_it, 1 - eps, 1 + eps) * A_i ) ],   delta > 1 + eps_high

    For A_i < 0 the min keeps the unclipped side as r grows: a token whose probability exploded gives a loss
    r * |A_i|, unbounded; capped, at most delta * |A_i| (and no gradient). For A_i > 0 the min already takes
    the clipped side for every r > 1 + eps_high, and delta lies above that: nothing changes there.
    In stats such a token (A_i < 0, r > delta) counts in clip_frac_delta and in clip_frac: like a clipped
    token it has no gradient.
top_entropy_quantile rho (Wang et al. 2025, "Beyond the 80/20 Rule", arXiv:2506.01939): the policy gradient
only on the high-entropy "forking" tokens, the top rho (0.2 in the paper) of the batch's real tokens:

    H_it = -sum_v pi_theta(v | q, o_i<t) log pi_theta(v | q, o_i<t)     (token_entropy, full distribution)
    tau = quantile_{1 - rho}( H_it over the batch's real tokens )
    pg_it <- 1[H_it >= tau] * pg_it                                      (the KL term stays on every token)

    The normaliser is unchanged. Under DDP tau is the quantile of the rank's own batch (TRL gathers all ranks').
entropy_coef c: an entropy bonus, the true entropy of the full distribution (not -log p of the sampled token):

    loss <- loss - c * sum_it m_it H_it / sum_it m_it                    (masked token mean, with gradient)

Truncated completions (DAPO's overlong filtering, Yu et al. 2025, arXiv:2503.14476, section 3.4) live in the
driver: --mask-truncated sets m_it = 0 for every token of a completion with no end token (truncated). Its
reward and the group's advantages are computed as before; under "grpo" and "dr_grpo" a dropped completion
still counts in N (as in TRL), under "bnpo", "dapo" and "cispo" its tokens leave the count.

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


def per_token_logps(logits, tokens, start=0):
    """log pi(tokens) under logits, without materialising a (N, T, V) log_softmax copy.

    logits: (N, T, V) float, tokens: (N, T) long. Returns (N, T) float.
    log_softmax(x)[y] = x[y] - logsumexp(x); gather first, then subtract (TRL's selective_log_softmax).
    The backward is written out (SelectiveLogSoftmax) so that it allocates one (N, T, V) tensor, not three.
    start: logits is a forward's (N, start + T, V), of which positions start: predict the tokens (the prompt's
    positions come before). Slicing them off here, rather than before the call, saves the backward a second
    zero-filled (N, start + T, V) tensor for the slice's gradient.
    """
    return SelectiveLogSoftmax.apply(logits, tokens, start)  # (N, T)


class SelectiveLogSoftmax(torch.autograd.Function):
    """x[y] - logsumexp(x) over the last dim of x = logits[:, start:], and its gradient g * (onehot(y) -
    softmax(x)) built in place (zero at the first start positions).

    What autograd would do for `x.gather(-1, y) - torch.logsumexp(x, -1)` on a slice x: a zero-filled tensor for
    gather's gradient, exp(x - lse) and its product with -g for logsumexp's, their sum, and a zero-filled
    full-size tensor for the slice's: four (N, T, V) tensors alive beside the logits (at a GPT-2 vocabulary the
    largest tensors of the step). Here: one, and the same numbers, the same operations in the same order
    (tests/test_grpo.py compares them bit for bit).
    """

    @staticmethod
    def forward(ctx, logits, tokens, start):
        x = logits if start == 0 else logits[:, start:]  # (N, T, V)
        idx = tokens.unsqueeze(-1)  # (N, T, 1)
        lse = torch.logsumexp(x, dim=-1)  # (N, T)
        ctx.save_for_backward(logits, idx, lse)
        ctx.start = start
        return x.gather(-1, idx).squeeze(-1) - lse  # (N, T)

    @staticmethod
    def backward(ctx, g):
        logits, idx, lse = ctx.saved_tensors
        start, g = ctx.start, g.unsqueeze(-1)  # g: (N, T, 1)
        grad = torch.empty_like(logits)  # (N, start + T, V)
        grad[:, :start] = 0  # the prompt positions
        part = grad if start == 0 else grad[:, start:]  # a view: written in place
        x = logits if start == 0 else logits[:, start:]
        torch.sub(x, lse.unsqueeze(-1), out=part)
        part.exp_().mul_(-g)  # -g * softmax(x): logsumexp's part
        part.scatter_add_(-1, idx, g)  # + g at the token: gather's part
        return grad, None, None


def token_entropy(logits):
    """True entropy H = -sum_v p_v log p_v of the full distribution at each position, with gradient.

    logits: (N, T, V). Returns (N, T). Its backward keeps a (N, T, V) log-softmax: only for the entropy
    bonus and the top-entropy mask, which need it per token.
    """
    logp = F.log_softmax(logits.float(), dim=-1)  # (N, T, V)
    return -(logp.exp() * logp).sum(-1)  # (N, T)


@torch.no_grad()
def token_entropy_pieces(logits, numbers=1 << 24):
    """token_entropy of logits (n, T, V) without gradient, over pieces of about `numbers` logits (64 MiB):
    the same (n, T) numbers without three (n, T, V) temporaries beside the logits (log-softmax, its exp,
    their product). Pieces above glibc's 32 MiB mmap threshold go back to the system when freed; smaller
    ones would stay resident in a fragmented heap."""
    n, T, V = logits.shape  # pieces are views (logits may be a slice of a forward's): never a copy
    if T * V <= numbers:  # whole rows, several at a time
        return torch.cat([token_entropy(x) for x in logits.split(numbers // (T * V))])  # (n, T)
    return torch.stack([torch.cat([token_entropy(x) for x in row.split(numbers // V)]) for row in logits])


def entropy_from_logits(logits, mask):
    """True entropy H = -sum_v p_v log p_v of the full distribution at each position, masked mean.

    logits: (N, T, V), mask: (N, T). Returns a scalar. (Not -log p of the sampled token: that is a
    one-sample estimate whose mean equals H only in expectation, and was mislabelled in the original.)
    """
    H = token_entropy(logits)  # (N, T)
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


def truncated(tokens, eos_id):
    """True for a completion that never sampled the end token: cut at max_new_tokens (DAPO's "overlong").

    tokens: (N, T) long. Returns (N,) bool. Read from the tokens, not from the mask: a completion whose end
    token is its last token has an all-ones mask too, and it is not truncated.
    """
    return ~(tokens == eos_id).any(dim=1)  # (N,)


# -----------------------------------------------------------------------------
# the loss


LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo", "cispo")
# the paper's (eps_low, eps_high) for each level of the importance ratio
DEFAULT_CLIP = {"token": (0.2, 0.2), "sequence": (3e-4, 4e-4)}  # DeepSeekMath 4.2; GSPO section 5.1


def clip_range(importance_level="token", clip_eps=None, clip_eps_high=None):
    """(eps_low, eps_high) of the clip. Given clip_eps sets both sides; given clip_eps_high the upper one;
    what is not given is the level's default: 0.2 / 0.2 per token, 3e-4 / 4e-4 per sequence (GSPO)."""
    if importance_level not in DEFAULT_CLIP:
        raise ValueError(f"unknown importance_level {importance_level!r}; expected 'token' or 'sequence'")
    eps_low, eps_high = DEFAULT_CLIP[importance_level]
    if clip_eps is not None:
        eps_low = eps_high = clip_eps
    if clip_eps_high is not None:
        eps_high = clip_eps_high
    return eps_low, eps_high


def grpo_loss(
    logp,
    old_logp,
    ref_logp,
    advantages,
    mask,
    *,
    clip_eps=None,
    clip_eps_high=None,
    beta=0.04,
    loss_type="grpo",
    max_completion_len=None,
    num_tokens=None,
    importance_level="token",
    cispo_eps_max=5.0,
    delta=None,
    entropy=None,
    top_entropy_quantile=1.0,
    entropy_coef=0.0,
):
    """Clipped GRPO surrogate with a per-token k3 KL penalty (DeepSeekMath eq. 3), as a loss, and its
    descendants (GSPO, CISPO, two-sided clipping, top-entropy tokens, an entropy bonus: module docstring).

    logp:       (N, T) log pi_theta of the sampled tokens, with gradient
    old_logp:   (N, T) log pi_old, the policy that sampled them (detached)
    ref_logp:   (N, T) log pi_ref, the frozen reference (detached); None with beta = 0, when the
                reference forward can be skipped (as TRL does): then there is no "kl" in stats
    advantages: (N,)   one per completion, broadcast over its tokens
    mask:       (N, T) 1 for real completion tokens, 0 for what follows the end token
    clip_eps, clip_eps_high: the clip range, see clip_range (default 0.2, or 3e-4 / 4e-4 per sequence)
    loss_type:  "grpo" | "bnpo" | "dapo" | "dr_grpo" | "cispo", see the module docstring
    max_completion_len: the T of "dr_grpo"'s constant normaliser (defaults to mask.size(1))
    num_tokens: "dapo" and "cispo": the token count to divide by; under DDP the all-reduced global count
                (each rank's loss is then sum/global, and DDP's gradient *mean* over W ranks must be
                undone by the caller multiplying by W, see train_grpo.py). Default: this batch's count.
    importance_level: "token" (PPO, GRPO) | "sequence" (GSPO): one ratio per completion
    cispo_eps_max: "cispo": the cap on the importance weight
    delta:      two-sided clipping (INTELLECT-2): cap on the unclipped ratio, > 1 + eps_high; None: off
    entropy:    (N, T) per-token entropy H of pi_theta (token_entropy), with gradient; needed only by
                top_entropy_quantile < 1 (uses it detached) and entropy_coef != 0
    top_entropy_quantile: rho in (0, 1]: the policy gradient only on the top rho of real tokens by entropy
    entropy_coef: weight of the entropy bonus subtracted from the loss
    Returns (loss, stats); stats are detached scalars.
    """
    if ref_logp is None and beta != 0:
        raise ValueError(f"ref_logp is needed for the KL term (beta={beta}); only beta=0 may omit it")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {', '.join(LOSS_TYPES)}")
    if not 0 < top_entropy_quantile <= 1:
        raise ValueError(f"top_entropy_quantile must be in (0, 1], got {top_entropy_quantile}")
    if entropy is None and (top_entropy_quantile < 1 or entropy_coef != 0):
        raise ValueError("top_entropy_quantile < 1 and entropy_coef != 0 need the per-token entropy")
    eps_low, eps_high = clip_range(importance_level, clip_eps, clip_eps_high)
    if delta is not None and loss_type == "cispo":
        raise ValueError("delta caps the ratio of the clipped surrogate; cispo caps its weight with cispo_eps_max")
    if delta is not None and not delta > 1 + eps_high:
        raise ValueError(f"delta must exceed 1 + eps_high = {1 + eps_high}, got {delta}")
    old_logp, advantages = old_logp.detach(), advantages.detach()
    mask = mask.float()
    A = advantages.unsqueeze(1)  # (N, 1), the same advantage for every token of a completion

    # importance ratio pi_theta / pi_old: per token, or per completion (GSPO, a geometric mean of the tokens')
    logratio = logp - old_logp  # (N, T)
    if importance_level == "sequence":
        logratio = (logratio * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)  # (N, 1)
    ratio = torch.exp(logratio)  # (N, T), or (N, 1): s_i

    if loss_type == "cispo":
        # CISPO: the clipped weight, no gradient through it, times log pi: every token keeps a gradient
        weight = torch.clamp(ratio, max=cispo_eps_max).detach()  # sg(min(r, eps_max))
        pg_loss = -weight * A * logp  # (N, T)
    else:
        # clipped surrogate (PPO eq. 7), per token or per sequence (then (N, 1), broadcast below)
        ratio_capped = ratio if delta is None else torch.clamp(ratio, max=delta)  # INTELLECT-2: min(r, delta)
        pg_loss1 = -ratio_capped * A
        pg_loss2 = -torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * A
        pg_loss = torch.max(pg_loss1, pg_loss2)  # = -min(ratio*A, clip(ratio)*A)

    if top_entropy_quantile < 1:
        # Wang et al. 2025: keep the policy gradient on the top rho of real tokens by entropy
        H = entropy.detach()  # (N, T)
        real_H = H.masked_fill(mask == 0, float("nan")).flatten()  # padding as NaN: nanquantile skips it
        tau = torch.nanquantile(real_H, 1 - top_entropy_quantile)  # the batch's (1 - rho)-quantile
        pg_loss = pg_loss * (H >= tau)  # (N, T); NaN tau (no real token) keeps nothing

    # k3 KL estimator to the reference, per token (DeepSeekMath eq. 4); >= 0 by x - log x - 1 >= 0
    per_token = pg_loss  # (N, T), or (N, 1) per sequence without a KL term
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
    elif loss_type in ("dapo", "cispo"):  # CISPO normalises over tokens, as DAPO
        denom = mask.sum() if num_tokens is None else num_tokens
        loss = (per_token * mask).sum() / torch.as_tensor(denom, dtype=per_token.dtype).clamp(min=1)
    else:  # "dr_grpo"
        L = mask.size(1) if max_completion_len is None else max_completion_len
        loss = (per_token * mask).sum() / (mask.size(0) * L)

    if entropy_coef != 0:  # entropy bonus: the masked token mean of the true entropy, with gradient
        H_mean = (entropy * mask).sum() / mask.sum().clamp(min=1)
        loss = loss - entropy_coef * H_mean

    # diagnostics, masked means over real tokens
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        capped = torch.zeros_like(ratio)  # delta: A < 0 and the ratio above the cap, no gradient either
        if loss_type == "cispo":  # the weight was capped; the token keeps its gradient
            clipped_low = torch.zeros_like(ratio)
            clipped_high = (ratio > cispo_eps_max).float()
        else:
            clipped_low = ((ratio < 1 - eps_low) & (A < 0)).float()  # clip is active: no gradient
            clipped_high = ((ratio > 1 + eps_high) & (A > 0)).float()
            if delta is not None:
                capped = ((ratio > delta) & (A < 0)).float()
        stats = {
            "clip_frac_low": (clipped_low * mask).sum() / n,
            "clip_frac_high": (clipped_high * mask).sum() / n,
            "clip_frac": ((clipped_low + clipped_high + capped) * mask).sum() / n,  # disjoint: each kills a gradient
            "ratio_mean": (ratio * mask).sum() / n,
            "pg_loss": (pg_loss * mask).sum() / n,
        }
        if delta is not None:
            stats["clip_frac_delta"] = (capped * mask).sum() / n
        if ref_logp is not None:
            stats["kl"] = (kl * mask).sum() / n
    return loss, stats

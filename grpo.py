"""
GRPO loss functions: the tutorial file of nanoGRPO. Pure functions, tensors in, (loss, stats) out.

GRPO = Group Relative Policy Optimization (Shao et al., "DeepSeekMath", arXiv:2402.03300, section 4.1; used for
DeepSeek-R1, arXiv:2501.12948). Read it top to bottom next to the paper: the plain objective first, then its
descendants (GSPO, CISPO, ...), then how log-probs and entropies are read from the logits without big copies.

For each prompt q, sample a *group* of G completions o_1..o_G from pi_old, the policy that collected the data,
and score each with a reward r_i. The group replaces PPO's value network: every token of o_i has the advantage

    A_i = (r_i - mean(r_1..r_G)) / std(r_1..r_G)                           (outcome supervision, 4.1.2)

and pi_theta maximises PPO's clipped surrogate minus a per-token KL penalty to the frozen reference pi_ref (SFT):

    J(theta) = E_q E_{o_i ~ pi_old} [ 1/G sum_i 1/|o_i| sum_t {
                  min( ratio_it * A_i, clip(ratio_it, 1 - eps, 1 + eps) * A_i ) - beta * k3_it } ]   (eq. 3)
    ratio_it = pi_theta(o_it | q, o_i<t) / pi_old(o_it | q, o_i<t)
    k3_it    = pi_ref / pi_theta - log(pi_ref / pi_theta) - 1 = exp(ref - logp) - (ref - logp) - 1     (eq. 4)

k3 (Schulman, "Approximating KL divergence", 2020) is >= 0 for every sample, 0 where the two log-probs agree, and
unbiased for KL(pi_theta || pi_ref) on tokens sampled from pi_theta (the original description's k1, the sequence
sum logp - ref, has a gradient of expectation zero). We minimise loss = -J. At mu = 1 update per rollout ratio == 1
when the gradient is taken, nothing is clipped, and the gradient is REINFORCE with a group baseline; with mu > 1
the clip keeps the updates near pi_old. The sums over t run over the real tokens m_it = 1 (completion_mask).

How the per-token terms become one number is the whole difference between the loss types (loss_type):
    "grpo"     the paper's 1/G sum_i 1/|o_i|: each completion's token mean, averaged. A token of a short
               completion weighs more, which biases length (Liu et al. 2025, "Dr. GRPO", section 3.1).
    "bnpo"     masked sum / real tokens of the batch: one token, one vote. Under DDP the rank's own batch
               (TRL's definition); DDP then averages per-rank token means, not the one-process token mean.
    "dapo"     masked sum / real tokens of the *global* batch, all ranks (Yu et al. 2025, "DAPO", token-level
               loss); in one process the same as "bnpo".
    "dr_grpo"  masked sum / (N * max_completion_len): a constant normaliser, no length bias (Dr. GRPO).
A piece of the batch (a micro-batch, a DDP rank's batch) is normalised by the whole batch's counts and returns
its share of the batch's loss (batch_share), so that the pieces' gradients add up to the batch's.

Shapes: B prompts, G group size, N = B*G completions, T completion tokens, V vocabulary.
"""

import torch
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# advantages and the mask


def group_advantages(rewards, group_size, scale="group", eps=1e-4):
    """Group-relative advantages (DeepSeekMath 4.1.2, outcome supervision).

    rewards: (N,) float, N = B*G; the G completions of prompt b sit at rows b*G:(b+1)*G.
    scale: "group" divides by the group's std (DeepSeekMath), "batch" by the whole batch's (REINFORCE++ style: no
    blow-up of groups with a tiny spread), "none" by nothing (Dr. GRPO: the std over-weights too easy or too hard
    prompts). Returns (N,). A group whose rewards are all equal gets exactly 0 (numerator 0), never NaN.
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


def completion_mask(tokens, eos_id):
    """1 for real completion tokens: everything up to and including the first end token, 0 after.

    tokens: (N, T) long. Returns (N, T) float. A row with no end token (truncated at max_new_tokens) is all ones:
    the policy sampled its tokens, and its reward of nothing is what teaches it to stop (but see truncated).
    """
    is_eos = (tokens == eos_id).long()
    before = is_eos.cumsum(dim=1) - is_eos  # number of end tokens strictly before t
    return (before == 0).float()  # (N, T)


# -----------------------------------------------------------------------------
# the loss

LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo", "cispo")


def grpo_loss(
    logp, old_logp, ref_logp, advantages, mask, *,
    clip_eps=None, clip_eps_high=None, beta=0.04, loss_type="grpo", max_completion_len=None,  # GRPO
    num_completions=None, rank_tokens=None, num_tokens=None, world_size=1,  # the whole batch's counts
    importance_level="token", cispo_eps_max=5.0, delta=None,  # descendants, off by default (below)
    entropy=None, top_entropy_quantile=1.0, entropy_coef=0.0,
    is_weight=None,  # off-policy samples (async rollouts): off_policy_weight, below
):  # fmt: skip
    """The clipped GRPO surrogate with a per-token k3 KL penalty (DeepSeekMath eq. 3), as a loss.

    logp:       (N, T) log pi_theta of the sampled tokens, with gradient
    old_logp:   (N, T) log pi_old, the policy that sampled them (detached here)
    ref_logp:   (N, T) log pi_ref, the frozen reference; None with beta = 0 (no reference forward, as TRL; no "kl")
    advantages: (N,)   one per completion, broadcast over its tokens
    mask:       (N, T) 1 for the tokens in the loss, 0 for what follows the end token
    clip_eps, clip_eps_high: the clip range, 0.2 each unless given (clip_range); loss_type: the normaliser (above);
    max_completion_len: dr_grpo's T (default mask.size(1)). num_completions, rank_tokens, num_tokens, world_size:
    the whole batch's counts when this call sees a piece of it (batch_share); num_tokens, the global batch's real
    tokens, is what "dapo", "cispo" and the entropy bonus divide by. Not given: the call's batch is the whole.
    is_weight: (N, T) importance weights of samples drawn by another policy (off_policy_weight), multiplying the
    policy-gradient term (detached; the KL term and the normaliser are unchanged); old_logp is then pi_prox.
    Returns (loss, stats); stats are detached masked means over this call's tokens.
    """
    if ref_logp is None and beta != 0:
        raise ValueError(f"ref_logp is needed for the KL term (beta={beta}); only beta=0 may omit it")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {', '.join(LOSS_TYPES)}")
    eps_low, eps_high = clip_range(importance_level, clip_eps, clip_eps_high)
    check_descendants(loss_type, eps_high, delta, entropy, top_entropy_quantile, entropy_coef)
    old_logp, advantages = old_logp.detach(), advantages.detach()
    mask = mask.float()
    A = advantages.unsqueeze(1)  # (N, 1), the same advantage for every token of a completion

    # importance ratio pi_theta / pi_old, per token
    logratio = logp - old_logp  # (N, T)
    if importance_level == "sequence":  # GSPO (below): one ratio per completion
        logratio = sequence_logratio(logratio, mask)  # (N, 1)
    ratio = torch.exp(logratio)  # (N, T), or (N, 1): s_i

    if loss_type == "cispo":  # CISPO (below): a capped weight instead of a clipped update
        pg_loss = cispo_pg_loss(ratio, A, logp, cispo_eps_max)  # (N, T)
    else:  # the clipped surrogate (PPO eq. 7), as a loss
        pg_loss1 = -ratio * A
        if delta is not None:  # two-sided clipping (INTELLECT-2, below): min(r, delta) on the unclipped side
            pg_loss1 = -torch.clamp(ratio, max=delta) * A
        pg_loss2 = -torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * A
        pg_loss = torch.max(pg_loss1, pg_loss2)  # = -min(ratio*A, clip(ratio)*A)
    if top_entropy_quantile < 1:  # the policy gradient on the high-entropy tokens only (below)
        pg_loss = pg_loss * high_entropy_tokens(entropy, mask, top_entropy_quantile)  # (N, T)
    if is_weight is not None:  # samples of another policy mu: the correction (below)
        pg_loss = pg_loss * is_weight.detach()  # (N, T)

    # k3 KL estimator to the reference, per token (DeepSeekMath eq. 4); >= 0 by x - log x - 1 >= 0
    per_token, kl = pg_loss, None  # (N, T), or (N, 1) per sequence without a KL term
    if ref_logp is not None:
        d = ref_logp.detach() - logp  # (N, T)
        kl = torch.exp(d) - d - 1
        per_token = pg_loss + beta * kl

    # the normaliser: the whole difference between the loss types
    n_global = torch.as_tensor(mask.sum() if num_tokens is None else num_tokens, dtype=per_token.dtype).clamp(min=1)
    if loss_type == "grpo":
        per_seq = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)  # (N,) token mean per completion
        loss = per_seq.mean()
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1)
    elif loss_type in ("dapo", "cispo"):  # CISPO normalises over tokens, as DAPO
        loss = (per_token * mask).sum() / n_global
    else:  # "dr_grpo"
        L = mask.size(1) if max_completion_len is None else max_completion_len
        loss = (per_token * mask).sum() / (mask.size(0) * L)
    loss = loss * batch_share(loss_type, mask, num_completions, rank_tokens, world_size)

    if entropy_coef != 0:  # the entropy bonus (below): c x the global batch's token mean, x W against DDP's mean
        loss = loss - entropy_coef * (world_size * (entropy * mask).sum() / n_global)
    return loss, loss_stats(ratio, A, pg_loss, kl, mask, loss_type, (eps_low, eps_high), cispo_eps_max, delta)


def batch_share(loss_type, mask, num_completions=None, rank_tokens=None, world_size=1):
    """The factor that turns the loss of a piece of the batch, as grpo_loss normalises it, into the piece's share
    of the whole batch's loss, so that the shares sum to the batch's loss and their gradients to its gradient.

    mask: (m, T) the piece's; num_completions: the completions of the rank's batch; rank_tokens: its real tokens;
    world_size: W DDP ranks. A driver splits the rank's batch into micro-batches to bound memory (their
    gradients add up over backward calls) and DDP then *averages* the W ranks' gradients:

        grpo, dr_grpo   the piece's mean over its m completions, x m / num_completions: the rank's mean. Every
                        rank holds as many completions, so DDP's mean of the ranks' means is the global one.
        bnpo            the piece's token mean, x its tokens / rank_tokens: the rank's token mean (by definition
                        the rank's: DDP's mean of them is not the global token mean; that is "dapo").
        dapo, cispo     already divided by the global token count (num_tokens), so each rank holds its part of
                        the global sum / count; x W, because DDP divides the ranks' summed gradients by W.

    Counts not given: the piece is the rank's batch (grpo, dr_grpo, bnpo: 1). With one piece and one process the
    factor is exactly 1 and the loss is the one-piece loss, bit for bit.
    """
    if loss_type in ("grpo", "dr_grpo"):
        return 1.0 if num_completions is None else mask.size(0) / num_completions
    if loss_type == "bnpo":
        return 1.0 if rank_tokens is None else mask.sum() / torch.as_tensor(rank_tokens).clamp(min=1)
    return world_size  # "dapo", "cispo"


def loss_stats(ratio, A, pg_loss, kl, mask, loss_type, eps, cispo_eps_max, delta):
    """grpo_loss's diagnostics, detached masked means over the call's real tokens: clip fractions (low, high,
    all: the share of tokens whose gradient the clip took away), the mean ratio, pg_loss and kl (k3)."""
    eps_low, eps_high = eps
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
        if kl is not None:
            stats["kl"] = (kl * mask).sum() / n
    return stats


# -----------------------------------------------------------------------------
# descendants of the objective: keyword arguments of grpo_loss, each off by default
#
# importance_level="sequence": GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization", arXiv:2507.18071,
# section 4.1). One importance ratio per completion, the geometric mean of its token ratios, clipped per completion:
#
#     s_i = (pi_theta(o_i | q) / pi_old(o_i | q))^(1/|o_i|) = exp( 1/|o_i| sum_t (logp_it - old_logp_it) )
#     J_GSPO = E [ 1/G sum_i min( s_i * A_i, clip(s_i, 1 - eps, 1 + eps) * A_i ) ]
#
#     s_i is a mean of |o_i| log-ratios, so it stays close to 1 and its eps is small: 3e-4 below, 4e-4 above
#     (GSPO section 5.1), the defaults at this level (clip_range). The term is the same for every token of o_i
#     and is aggregated by loss_type like any other ("grpo" gives the paper's 1/G sum_i); the KL stays per token.
#     At mu = 1 s_i == 1 and grad s_i = 1/|o_i| sum_t grad logp_it: the gradient is GRPO's, a length-normalised
#     REINFORCE. The two differ only off-policy (mu > 1), where GSPO clips whole completions.
#
# loss_type="cispo": CISPO (MiniMax-M1, arXiv:2506.13585, section 3.1). Clip the importance weight, not the
# update, and stop its gradient (sg):
#
#     r_it = pi_theta(o_it | q, o_i<t) / pi_old(o_it | q, o_i<t)          (or s_i at importance_level="sequence")
#     w_it = sg( min(r_it, eps_max) )                                      (no lower bound, as in the paper)
#     J_CISPO = E [ 1/(sum_i |o_i|) sum_i sum_t w_it * A_i * log pi_theta(o_it | q, o_i<t) ]
#
#     PPO's clip takes the gradient away from a token whose ratio left the range (often a rare "fork" token);
#     here every token keeps its REINFORCE gradient, weighted by at most eps_max (cispo_eps_max = 5.0, the value
#     TRL recommends from ScaleRL, arXiv:2510.13786). The normaliser is the token count, as "dapo" (num_tokens
#     too). At mu = 1 w == 1: the gradient is REINFORCE with token-level normalisation. In stats, clip_frac
#     counts the tokens whose weight was capped, which unlike PPO's keep their gradient.
#
# delta: two-sided clipping (INTELLECT-2, arXiv:2505.07291):
#
#     J = E [ min( min(r_it, delta) * A_i, clip(r_it, 1 - eps, 1 + eps) * A_i ) ],   delta > 1 + eps_high
#
#     For A_i < 0 the min keeps the unclipped side as r grows: a token whose probability exploded gives a loss
#     r * |A_i|, unbounded; capped, at most delta * |A_i| (and no gradient). For A_i > 0 the min already takes
#     the clipped side for every r > 1 + eps_high, and delta lies above that: nothing changes there.
#     In stats such a token (A_i < 0, r > delta) counts in clip_frac_delta and in clip_frac: like a clipped
#     token it has no gradient.
#
# top_entropy_quantile rho (Wang et al. 2025, "Beyond the 80/20 Rule", arXiv:2506.01939): the policy gradient
# only on the high-entropy "forking" tokens, the top rho (0.2 in the paper) of the batch's real tokens:
#
#     H_it = -sum_v pi_theta(v | q, o_i<t) log pi_theta(v | q, o_i<t)     (token_entropy, full distribution)
#     tau = quantile_{1 - rho}( H_it over the batch's real tokens )
#     pg_it <- 1[H_it >= tau] * pg_it                                      (the KL term stays on every token)
#
#     The normaliser is unchanged. Under DDP tau is the quantile of the rank's own batch (TRL gathers all ranks').
#     entropy: (N, T) the per-token entropy of pi_theta (token_entropy), used detached here.
#
# entropy_coef c: an entropy bonus, the true entropy of the full distribution (not -log p of the sampled token):
#
#     loss <- loss - c * sum_it m_it H_it / sum_it m_it                    (masked token mean, with gradient)
#
#     The token mean is the global batch's for every loss type (num_tokens; x world_size against DDP's mean).
#
# clip_eps_high (DAPO's "clip-higher", e.g. 0.28) lets unlikely tokens grow; dynamic sampling (DAPO) lives in the
# driver: groups whose rewards are all equal have A = 0 and teach nothing, so they are dropped and more sampled.
# Truncated completions (DAPO's overlong filtering, arXiv:2503.14476, section 3.4) live in the driver too:
# --mask-truncated sets m_it = 0 for every token of a completion with no end token (truncated). Its reward and
# the group's advantages are computed as before; under "grpo" and "dr_grpo" a dropped completion still counts
# in N (as in TRL), under "bnpo", "dapo" and "cispo" its tokens leave the count.

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


def check_descendants(loss_type, eps_high, delta, entropy, top_entropy_quantile, entropy_coef):
    """The descendants' arguments, refused with a clear error where they make no sense."""
    if not 0 < top_entropy_quantile <= 1:
        raise ValueError(f"top_entropy_quantile must be in (0, 1], got {top_entropy_quantile}")
    if entropy is None and (top_entropy_quantile < 1 or entropy_coef != 0):
        raise ValueError("top_entropy_quantile < 1 and entropy_coef != 0 need the per-token entropy")
    if delta is not None and loss_type == "cispo":
        raise ValueError("delta caps the ratio of the clipped surrogate; cispo caps its weight with cispo_eps_max")
    if delta is not None and not delta > 1 + eps_high:
        raise ValueError(f"delta must exceed 1 + eps_high = {1 + eps_high}, got {delta}")


def sequence_logratio(logratio, mask):
    """GSPO: log s_i, the mean of a completion's token log-ratios. logratio, mask: (N, T). Returns (N, 1)."""
    return (logratio * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)  # (N, 1)


def cispo_pg_loss(ratio, A, logp, eps_max):
    """CISPO's per-token loss -sg(min(r, eps_max)) * A * log pi: no gradient through the weight, so every token
    keeps its REINFORCE gradient. ratio: (N, T) or (N, 1), A: (N, 1), logp: (N, T). Returns (N, T)."""
    weight = torch.clamp(ratio, max=eps_max).detach()  # sg(min(r, eps_max))
    return -weight * A * logp  # (N, T)


def high_entropy_tokens(entropy, mask, rho):
    """1 where a real token's entropy is among the top rho of the batch's real tokens (ties kept), else 0.
    entropy, mask: (N, T). Returns (N, T) bool; no real token (a NaN quantile) keeps nothing."""
    H = entropy.detach()  # (N, T) it only selects tokens: no gradient through it
    real_H = H.masked_fill(mask == 0, float("nan")).flatten()  # padding as NaN: nanquantile skips it
    tau = torch.nanquantile(real_H, 1 - rho)  # the batch's (1 - rho)-quantile
    return H >= tau  # (N, T)


def truncated(tokens, eos_id):
    """True for a completion that never sampled the end token: cut at max_new_tokens (DAPO's "overlong").

    tokens: (N, T) long. Returns (N,) bool. Read from the tokens, not from the mask: a completion whose end
    token is its last token has an all-ones mask too, and it is not truncated.
    """
    return ~(tokens == eos_id).any(dim=1)  # (N,)


# -----------------------------------------------------------------------------
# off-policy samples: rollouts drawn by an older policy (train_grpo.py --rollout-workers, docs/async.md)
#
# With asynchronous rollouts a batch is sampled by a behaviour policy mu, the learner's weights of a few updates
# ago, and trained on by pi_theta. Three policies meet: mu (its log-probs are stored per token at sampling time),
# pi_prox (the learner's weights when the step began: the proximal policy, the clip's anchor) and pi_theta.
# Uncorrected, the ratio is taken against mu itself, pi_theta / mu, and the clip holds pi_theta near a policy that
# is s updates old. Corrected, the ratio is pi_theta / pi_prox, as on-policy, and the sample is reweighted by
# pi_prox / mu, which carries the expectation over mu to one over pi_prox (importance sampling). The weight is
# detached (a correction of the data, not a term to optimise) and multiplies the policy-gradient term only:
#
#     loss_it = w_it * max(-ratio_it * A_i, -clip(ratio_it, 1 - eps, 1 + eps) * A_i) + beta * k3_it,
#     ratio_it = pi_theta / pi_prox,   rho_it = pi_prox(o_it | ...) / mu(o_it | ...)
#
# The raw rho has a heavy tail (a token mu liked and pi_prox no longer does), so each method bounds it at C:
#     "tis"        w_it = min(rho_it, C): token-level truncated importance sampling (Yao et al. 2025, "Your
#                  efficient RL framework secretly brings you off-policy RL training"; verl's tis_imp_ratio_cap)
#     "mis"        rho_i = prod_t rho_it over the completion's real tokens, w_i = rho_i if rho_i <= C else 0:
#                  sequence-level masked importance sampling (Liu et al. 2025, "When speed kills stability"):
#                  the whole completion leaves the gradient when its probability moved too far
#     "decoupled"  w_it = rho_it where rho_it <= C, else 0: AReaL's decoupled PPO objective (Fu et al. 2025,
#                  arXiv:2505.24298, eq. 5; behav_imp_weight_cap filters tokens above the cap)
# At lag 0 mu == pi_prox and every w is 1 (up to the float rounding of the sampler's log-probs): the on-policy loss.

OFF_POLICY = ("none", "tis", "mis", "decoupled")


def off_policy_weight(prox_logp, behav_logp, mask, mode, cap=2.0):
    """Importance weights for samples of mu trained against pi_prox (above). prox_logp, behav_logp, mask: (N, T);
    mode: "tis" | "mis" | "decoupled"; cap: C > 1. Returns (w (N, T) detached, stats): is_capped_frac, the share of
    real tokens whose weight the cap changed (tis: truncated to C; mis, decoupled: set to 0), is_weight, the mean w.
    """
    if mode not in OFF_POLICY[1:]:
        raise ValueError(f"unknown off-policy correction {mode!r}; expected one of {', '.join(OFF_POLICY[1:])}")
    if not cap > 1:
        raise ValueError(f"the importance-weight cap must exceed 1, got {cap}")
    mask = mask.float()
    log_rho = (prox_logp.detach() - behav_logp.detach()) * mask  # (N, T), 0 off the mask
    if mode == "mis":
        log_rho = log_rho.sum(1, keepdim=True).expand_as(mask)  # (N, T) every token holds its completion's log rho_i
    rho = torch.exp(log_rho)
    capped = rho > cap
    w = torch.clamp(rho, max=cap) if mode == "tis" else rho.masked_fill(capped, 0.0)  # (N, T)
    n = mask.sum().clamp(min=1)
    stats = {"is_capped_frac": (capped.float() * mask).sum() / n, "is_weight": (w * mask).sum() / n}
    return w * mask, stats


# -----------------------------------------------------------------------------
# log-probs and entropies from the logits, without (N, T, V) copies (docs/memory.md)


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

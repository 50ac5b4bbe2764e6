"""
PPO loss functions for language models (RLHF-PPO): the baseline GRPO is measured against. Pure
functions beside grpo.py, same conventions: tensors in, (loss, stats) out, no model or optimizer.

PPO = Proximal Policy Optimization (Schulman et al. 2017, arXiv:1707.06347) with generalised advantage
estimation (GAE, Schulman et al. 2016, arXiv:1506.02438), as InstructGPT used it for RLHF (Ouyang et al.
2022, arXiv:2203.02155) and as "The N Implementation Details of RLHF with PPO" (Huang et al., ICLR 2024
blog track; its sequel "The N+ Implementation Details of RLHF with PPO", arXiv:2403.17031) reproduces
it. Names follow cleanrl's ppo.py: ratio, pg_loss1, pg_loss2, v_loss, approx_kl, clipfrac.
train_ppo.py is the driver (`python train_ppo.py`); `python -m pytest tests/test_ppo.py` checks this file.

The episode
-----------
A completion o = (o_1..o_T) of prompt q is one episode: the state before token t is s_t = (q, o_<t),
the action is o_t, and the episode ends at the end token (or after T tokens: a truncated completion is
scored as it stands, so its last token is terminal too). Only real tokens are steps; mask marks them.

The per-token reward (InstructGPT eq. 2, spread over tokens as in lm-human-preferences / N details):

    r_t = -kl_coef * (log pi_old(o_t|s_t) - log pi_ref(o_t|s_t))  +  [t is the last real token] * score(q, o)

The KL term is k1 of the sampled token. Summed over the episode it is the one-sample estimate of
KL(pi_old || pi_ref) for the sequence. Unlike in GRPO it sits in the *reward*, not in the loss, so its
gradient comes through the policy gradient, E[grad log pi * (-kl_coef * log pi/pi_ref)] =
-kl_coef * grad KL: k1 is the right estimator here (GRPO puts the KL in the loss and needs k3).

Advantages: GAE (Schulman et al. 2016, eq. 16), backwards over each completion's real tokens:

    delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)           V(s_{t+1}) = 0 after the last real token
    A_t     = delta_t + gamma * lam * A_{t+1}             A = 0 after the last real token
    R_t     = A_t + V(s_t)                                the value target ("returns" in cleanrl)

gamma = lam = 1 gives A_t = (sum_{k>=t} r_k) - V(s_t): the Monte-Carlo return minus a learned baseline,
the original nanoGRPO description's "simplified PPO" (no GAE, no discount); train_ppo.py
--gamma 1 --gae-lambda 1. lam < 1 trades that estimator's variance for the value model's bias.

The loss (PPO eq. 7 and the clipped value loss of OpenAI baselines' ppo2, cleanrl, N details):

    ratio    = pi_theta(o_t|s_t) / pi_old(o_t|s_t)
    pg_loss  = max(-A_t * ratio, -A_t * clip(ratio, 1 - eps, 1 + eps))
    v_loss   = 0.5 * max((V - R)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - R)^2)
    loss     = pg_loss + vf_coef * v_loss

Normalisation: both terms are masked means over the real tokens of the (mini)batch, one token one vote,
as lm-human-preferences and TRL's PPO do (GRPO's default averages each completion first, see grpo.py).
No entropy bonus (InstructGPT has none; the KL penalty keeps the policy from collapsing).

Shapes: N completions, T completion tokens. Every per-token tensor here is (N, T); mask is 1 on real
tokens, 0 after the end token, and is a prefix (real tokens first), as grpo.completion_mask makes it.
"""

import torch

# -----------------------------------------------------------------------------
# rewards


def per_token_rewards(scores, logp, ref_logp, mask, kl_coef=0.05):
    """RLHF-PPO's reward of every token: -kl_coef * (logp - ref_logp), plus the task score on the last
    real token (InstructGPT eq. 2; N implementation details, "reward = score - KL penalty").

    scores:   (N,)   one task score per completion (the reward functions' total)
    logp:     (N, T) log pi_old of the sampled tokens (the policy that sampled them)
    ref_logp: (N, T) log pi_ref of the same tokens
    mask:     (N, T) prefix mask of real tokens (at least one per row)
    Returns (rewards (N, T), kl (N, T)): the rewards, 0 after the end, and the k1 term they penalise.
    """
    mask = mask.float()
    kl = (logp - ref_logp).detach() * mask  # (N, T) k1 per token, only on real tokens
    rewards = -kl_coef * kl  # (N, T)
    last = (mask.sum(1).long() - 1).clamp(min=0)  # (N,) index of the last real token (prefix mask)
    rewards = rewards.scatter_add(1, last[:, None], scores.to(rewards.dtype)[:, None])  # score at the end
    return rewards, kl


# -----------------------------------------------------------------------------
# advantages


def gae(rewards, values, mask, gamma=1.0, lam=0.95):
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16) and the value targets.

    rewards: (N, T) per-token rewards, values: (N, T) V(s_t) of the value model at rollout time,
    mask: (N, T) prefix mask of real tokens. Returns (advantages (N, T), returns (N, T)), both 0 after
    the end. The value of the state after the last real token is 0: an episode never bootstraps from
    the padding that follows it, nor from another completion.
    """
    rewards, values, mask = rewards.detach().float(), values.detach().float(), mask.float()
    N, T = rewards.shape
    zero = torch.zeros(N, 1, dtype=rewards.dtype, device=rewards.device)
    next_values = torch.cat([values[:, 1:], zero], dim=1)  # (N, T) V(s_{t+1}), 0 past the last column
    not_done = torch.cat([mask[:, 1:], zero], dim=1)  # (N, T) 1 when token t+1 is a real step of the episode
    advantages = torch.zeros_like(rewards)  # (N, T)
    lastgaelam = torch.zeros(N, dtype=rewards.dtype, device=rewards.device)  # (N,) A_{t+1}
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_values[:, t] * not_done[:, t] - values[:, t]  # (N,)
        lastgaelam = (delta + gamma * lam * not_done[:, t] * lastgaelam) * mask[:, t]  # 0 on padding
        advantages[:, t] = lastgaelam
    returns = (advantages + values) * mask  # (N, T) R_t = A_t + V(s_t)
    return advantages, returns


def masked_mean(x, mask):
    """Mean of x over the positions where mask is 1."""
    mask = mask.float()
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x, mask, eps=1e-8):
    """(x - mean) / std over the real tokens (population std), 0 elsewhere: advantage whitening over the
    whole batch (N implementation details; TRL's masked_whiten). A batch of equal advantages becomes 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask.float()


def explained_variance(pred, target, mask):
    """1 - Var[target - pred] / Var[target] over the real tokens (cleanrl): 1 is a perfect value model,
    0 no better than a constant, < 0 worse. NaN when the targets do not vary (nothing to explain)."""
    var_y = masked_mean((target - masked_mean(target, mask)) ** 2, mask)
    resid = target - pred
    var_r = masked_mean((resid - masked_mean(resid, mask)) ** 2, mask)
    return torch.where(var_y > 0, 1 - var_r / var_y.clamp(min=1e-12), torch.full_like(var_y, float("nan")))


# -----------------------------------------------------------------------------
# the loss


def ppo_loss(
    logp, old_logp, values, old_values, advantages, returns, mask, *, clip_eps=0.2, clip_value=0.2, vf_coef=0.1
):
    """Clipped PPO surrogate plus clipped value loss (PPO eq. 7; cleanrl ppo.py), as a loss.

    logp:       (N, T) log pi_theta of the sampled tokens, with gradient
    old_logp:   (N, T) log pi_old, the policy that sampled them (detached)
    values:     (N, T) V_theta(s_t) of the value model, with gradient
    old_values: (N, T) V_old(s_t) at rollout time (detached), the centre of the value clip
    advantages: (N, T) per token (GAE, whitened by the caller), detached
    returns:    (N, T) value targets R_t, detached
    mask:       (N, T) 1 for real completion tokens
    Returns (loss, stats); stats are detached scalars.
    """
    old_logp, old_values = old_logp.detach(), old_values.detach()
    A, R, mask = advantages.detach(), returns.detach(), mask.float()

    # clipped surrogate (PPO eq. 7), per token
    logratio = logp - old_logp  # (N, T)
    ratio = torch.exp(logratio)  # (N, T)
    pg_loss1 = -A * ratio
    pg_loss2 = -A * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
    pg_loss = masked_mean(torch.max(pg_loss1, pg_loss2), mask)  # = -min(ratio*A, clip(ratio)*A)

    # clipped value loss: the new value may move at most clip_value from the rollout's, or pay the
    # larger of the two squared errors (ppo2 / cleanrl; Engstrom et al. 2020 find it rarely helps)
    v_loss_unclipped = (values - R) ** 2
    v_clipped = old_values + torch.clamp(values - old_values, -clip_value, clip_value)
    v_loss_clipped = (v_clipped - R) ** 2
    v_loss = 0.5 * masked_mean(torch.max(v_loss_unclipped, v_loss_clipped), mask)

    loss = pg_loss + vf_coef * v_loss

    # diagnostics, masked means over real tokens (cleanrl's names)
    with torch.no_grad():
        # clip active = the token gets no policy gradient (same definition as grpo.py's clip_frac)
        clipped = ((ratio < 1 - clip_eps) & (A < 0)) | ((ratio > 1 + clip_eps) & (A > 0))
        stats = {
            "pg_loss": pg_loss.detach(),
            "value_loss": v_loss.detach(),
            "approx_kl": masked_mean((ratio - 1) - logratio, mask),  # k3 of pi_old vs pi_theta, >= 0
            "clip_frac": masked_mean(clipped.float(), mask),
            "value_clip_frac": masked_mean(((values - old_values).abs() > clip_value).float(), mask),
            "ratio_mean": masked_mean(ratio, mask),
            "explained_var": explained_variance(values.detach(), R, mask),
        }
    return loss, stats

"""The rollouts file: a few whole groups of a logged step's rollout, token by token, for view.py.

train_grpo.py and train_ppo.py write `<log stem>_rollouts.jsonl` beside the metrics CSV: one JSON line
per logged step (step 1, every --eval-every steps and the last step) holding the first --rollout-groups
groups (GRPO under DDP: rank 0's) of the batch trained on. A line:
  step, kind ("grpo" | "ppo"), reward_names, and on the first logged step of each invocation command and config
  groups: [{prompt, completions: [{
      text        the completion as the reward functions saw it
      pieces      (T,) each token decoded on its own; the end token reads "|"
      ids         (T,) token ids
      mask        (T,) 1 = completion token (up to and including the end token), 0 = after it
      env_mask    (T,) 1 = token written by the environment (a tool's output), not sampled; zeros without a tool
      truncated   true when the completion never sampled the end token (false for a task without one)
      reward, parts   the total reward and each reward function's score (before its weight)
      advantage   GRPO: one float, the completion's group-relative advantage;
                  PPO: (T,) the whitened GAE advantage per token, and adv_gae (T,) before whitening
      value       PPO only: (T,) V_old(s_t) of the value model
      logp        (T,) log-prob of the token under the sampling policy pi_old (the policy before the update)
      ref_logp    (T,) log-prob under pi_ref, null with --beta 0 (no reference)
      kl          (T,) k3 = exp(ref_logp - logp) - (ref_logp - logp) - 1, the estimator the loss uses; null with --beta 0
      entropy     (T,) true entropy (nats) of the policy's full next-token distribution
  }]}]
Per-token numbers are null where mask is 0 (padding after the end token: the loss never sees them).
"""

import json
import os
import sys

import torch

from model import completion_logprobs_chunked


def add_rollout_args(parser):
    """--rollout-groups and the Weights & Biases flags, shared by train_grpo.py and train_ppo.py."""
    parser.add_argument(
        "--rollout-groups",
        type=int,
        default=4,
        help="groups of each logged step written token by token to <log stem>_rollouts.jsonl (view.py); 0 = none",
    )
    parser.add_argument("--wandb", action="store_true", help="also send the logged columns and rollouts to W&B")
    parser.add_argument("--wandb-project", default="nanogrpo", help="W&B project (--wandb)")
    parser.add_argument("--wandb-run-name", default=None, help="W&B run name (--wandb; default: W&B picks one)")


def rollouts_path(log):
    return os.path.splitext(log)[0] + "_rollouts.jsonl"


def start_rollouts(path, resume_step=None):
    """A new rollouts file, or on --resume the lines of steps <= resume_step (as CSVLogger keeps its rows)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    kept = []
    if resume_step is not None and os.path.exists(path):
        with open(path) as f:
            kept = [line for line in f if line.strip() and json.loads(line)["step"] <= resume_step]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)


def append_rollouts(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record, separators=(",", ":")) + "\n")


@torch.no_grad()
def token_stats(policy, ref, seq, n_prompt, prompt_mask, temperature, ctx):
    """Per-token numbers of the rows seq (n, P + T) under policy (and ref, or None): a dict of (n, T)
    float tensors logp, entropy, and ref_logp and kl (k3, as grpo_loss) when ref is given."""
    # the chunked head, about 16M logits (64 MiB) at a time: never the (n, T, V) logits (at GPT-2's vocabulary
    # they would dwarf the update), and pieces above glibc's 32 MiB mmap threshold, which go back to the system
    # when freed (16 MiB pieces stay in the heap: measured, 200 MiB more resident at V = 50,000)
    chunk = max(1, (1 << 24) // policy.config.vocab_size)
    with ctx:
        logp, H = completion_logprobs_chunked(policy, seq, n_prompt, temperature, prompt_mask, chunk)  # (n, T) each
        out = {"logp": logp.float(), "entropy": H}  # (n, T)
        if ref is not None:
            ref_logp, _ = completion_logprobs_chunked(ref, seq, n_prompt, temperature, prompt_mask, chunk)
            d = ref_logp.float() - out["logp"]  # log(pi_ref / pi_theta)
            out.update(ref_logp=ref_logp.float(), kl=torch.exp(d) - d - 1)  # k3 (Schulman), as grpo.py
    return out


def _num(x):
    return float(f"{x:.6g}")


def _row(t, m):
    """A (T,) tensor as a list, null where the mask is 0."""
    return [_num(v) if k else None for v, k in zip(t.tolist(), m, strict=True)]


def rollout_record(
    step, kind, tok, groups, seq, n_prompt, mask, rewards, parts, advantages, stats, env_mask=None, uses_eos=True
):
    """One line of the rollouts file (the module docstring) for the first len(groups) groups of rows.

    groups: [(prompt, [completion texts])], G texts each; seq (n, P + T), mask (n, T), rewards (n,),
    parts {name: [n floats]}, advantages (n,) GRPO or (n, T) PPO; stats {name: (n, T)} per-token numbers
    (logp, entropy, ref_logp, kl, PPO: adv_gae, value); env_mask (n, T) or None (no tool: zeros);
    uses_eos False: the task has no end token (fixed-length completions), none is truncated.
    """
    ids = seq[:, n_prompt:].tolist()  # (n, T)
    out, i = [], 0
    for prompt, texts in groups:
        comps = []
        for text in texts:
            m = [int(v) for v in mask[i].tolist()]
            c = {
                "text": text,
                "pieces": ["|" if t == tok.eos_id else tok.decode([t]) for t in ids[i]],
                "ids": ids[i],
                "mask": m,
                "env_mask": [0] * len(m) if env_mask is None else [int(v) for v in env_mask[i].tolist()],
                "truncated": uses_eos and tok.eos_id not in ids[i],
                "reward": _num(float(rewards[i])),
                "parts": {k: _num(float(v[i])) for k, v in parts.items()},
            }
            a = advantages[i]
            c["advantage"] = _row(a, m) if a.dim() else _num(float(a))
            for k in ("logp", "ref_logp", "kl", "entropy", "adv_gae", "value"):
                if k in stats:
                    c[k] = _row(stats[k][i], m)
                elif k in ("ref_logp", "kl"):
                    c[k] = None  # no reference (--beta 0)
            comps.append(c)
            i += 1
        out.append({"prompt": prompt, "completions": comps})
    return {"step": step, "kind": kind, "reward_names": list(parts), "groups": out}


def run_config(args):
    """The command and flags of this invocation, for the first rollouts line (view.py shows them)."""
    return {"command": " ".join(["python", *sys.argv]), "config": {k: v for k, v in vars(args).items()}}


def require_wandb(fail):
    """--wandb: the wandb module, or one line and exit 2 when it is not installed."""
    try:
        import wandb
    except ImportError:
        fail("--wandb: the wandb package is not installed (pip install wandb), or run without --wandb")
    return wandb


def wandb_rollout_table(wandb, record):
    """The rollouts line as a W&B table: one row per completion."""
    names = record["reward_names"]
    table = wandb.Table(columns=["step", "group", "prompt", "completion", "reward", *names, "advantage", "truncated"])
    for gi, g in enumerate(record["groups"]):
        for c in g["completions"]:
            a = c["advantage"]
            adv = a if isinstance(a, float) else sum(v for v in a if v is not None) / max(1, sum(c["mask"]))
            table.add_data(
                record["step"], gi, g["prompt"], c["text"], c["reward"], *[c["parts"][n] for n in names], adv,
                c["truncated"],
            )  # fmt: skip
    return table

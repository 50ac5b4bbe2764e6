"""CSV metrics logger: one row per step, a fixed header, and an honest definition for every column.

Columns every RL driver writes (GRPO and PPO share the names where they mean the same thing). Every
column describes the global batch (all DDP ranks), not a mean of per-rank figures (loss: see below).
  step          optimizer step, 1-based; the row of step 0 holds the starting policy's held-out evaluation
                (eval_* columns) only, so every curve starts where RL starts
  mean_r, std_r mean and std of the total reward over the step's N sampled completions (with
                --dynamic-sampling: of the first, unfiltered draw, as are frac_zero_std, len_mean, r_<name>)
  r_<name>      mean of one reward function (before its weight), one column per function
  frac_zero_std fraction of groups whose G rewards are all equal (their GRPO advantage is 0)
  kl            masked mean per-token k3 estimate of KL(pi_theta || pi_ref) on the tokens trained on
                (GRPO with --beta 0: empty, no reference forward is run)
                (GRPO: the policy as the step's last update saw it, before that update's optimizer
                step, so with mu = 1 the rollout policy; PPO: the rollout policy)
  entropy       masked mean true entropy (nats) of the policy's full next-token distribution over every
                real completion token of the batch trained on (with --mask-truncated the truncated
                completions' tokens too, though the loss drops them), before the step's first update
  clip_frac     fraction of real tokens trained on where the PPO clip was active (low or high) or, with
                --delta, where A < 0 and the ratio exceeded delta: every token the clipping left without a
                gradient (with --loss-type cispo: where the importance weight was capped, those tokens keep a
                gradient);
                GRPO: in the step's last update, PPO: mean over its minibatch updates
  loss          the loss that was minimised (mean over the mu updates; under DDP the mean of the
                ranks' losses, the global loss for every loss type but bnpo, see grpo.py)
  grad_norm     total gradient 2-norm before clipping (mean over the mu updates)
  lr            the policy's learning rate at this step (--lr-schedule)
  len_mean      mean number of real completion tokens (end token included) of the step's N completions
  eval_acc      held-out exact-match accuracy (arithmetic), empty on steps without evaluation
  eval_r        held-out mean score of the task's own rule, empty on steps without evaluation
                (arithmetic: the total reward; shakespeare: the lexicon rule, the gold score, never the RM)
A task may add columns of its own: per step from its step_metrics (on the first draw's completions, every
rank's), held-out from its evaluate. The chain task's (tasks/chain.py ChainTask):
  think_frac    share of the step's completions that open a scratchpad ("<"): worked solutions
  len_right, len_wrong  mean length in characters of the completion text (the end token counts as one) of
                the step's right and of its wrong completions (nan when there is none); equal to tokens
                for the character model, not under a BPE tokenizer (len_mean counts tokens)
  eval_acc, eval_len, eval_think_frac  held-out chains, greedy: accuracy, mean completion length in
                characters as len_right (end token included), share of worked solutions
  eval_acc_think, eval_acc_direct  greedy accuracy among the worked and among the direct completions
                (nan when there is none)
  eval_*_sampled  the same sampled at temperature 1 with fixed random numbers
A task with a tool (tasks/base.py, docs/tools.md) adds, per step on the first draw's completions (every rank's):
  tool_frac     share of the step's completions in which the policy called the tool at least once (wrote the
                trigger token; a trigger inside a reply is the environment's, not a call)
  tool_calls    mean number of calls (trigger tokens the policy wrote) per completion
  env_frac      share of the step's completion tokens (up to and including the end token) that the environment
                wrote (the tool's replies)
  With a tool, the columns counted over tokens (len_mean, entropy, kl, clip_frac, tokens_per_s) count the
  policy's tokens only: the environment's are not in the mask (len_mean + the replies = the completion).
The chain_tool task's (tasks/chain_tool.py ChainToolTask) held-out columns, beside chain's (whose eval_len counts
the replies' characters too, and eval_think_frac, eval_acc_think every worked solution, called or not):
  eval_tool_frac  greedy: share of the held-out completions that called the calculator ("#")
  eval_acc_tool, eval_acc_head  greedy accuracy among the completions that called the calculator, and among
                the worked ones that did not (worked in the head); nan when there is none (eval_acc_direct: chain's)
  eval_tool_frac_sampled, eval_acc_tool_sampled, eval_acc_head_sampled  the same sampled, as chain's _sampled
  gold_r        shakespeare with a reward model: mean gold score (the lexicon rule) of the step's
                samples, beside mean_r = r_rm, the reward model's score that was optimised
  time_s        wall-clock seconds since the run started (not counting SFT)
  tokens_per_s  real completion tokens sampled in the step (every draw, every rank) per second of the
                step's wall time
  kept_groups   GRPO: groups trained on whose G rewards are not all equal (non-zero advantage); without
                --dynamic-sampling B x (1 - frac_zero_std), with it the groups kept, 0 when no draw had one
  policy_lag    async (--rollout-workers): learner steps between the policy that sampled the step's batch and the
                one it trains (utils/async_rl.py): min(--max-staleness, steps done since the run began)
  wait_s        async: seconds the learner waited for the step's batch (0 when a worker had it ready): the
                share of time_s the learner stood idle, generation-bound where it is large
  behav_kl      async or --off-policy: masked mean of log mu - log pi_prox over the tokens trained on, mu the
                sampler's stored log-probs, pi_prox the learner's weights as the step began: a k1 estimate of
                KL(mu || pi_prox), 0 at lag 0 up to the float rounding of the sampler (KV cache) path
  is_weight     --off-policy tis, mis, decoupled: masked mean of the importance weight w the policy-gradient term
                was multiplied by (grpo.py off_policy_weight), before the step's first update
  is_capped_frac  the share of those tokens whose weight the cap --is-cap changed (tis: truncated to C; mis: in a
                completion whose weight exceeded C, decoupled: a token whose weight did, both set to 0)
  skipped       1 if the step was skipped because a loss or gradient was NaN or inf: none of its
                updates was applied (loss and grad_norm are then empty)
Beside the CSV, <log stem>_rollouts.jsonl holds a few whole groups of step 1 and of every --eval-every step
token by token (log-probs, k3 KL, entropy, masks, rewards, advantages): utils/rollouts.py defines it,
view.py draws it.
"""

import csv
import os

BASE_COLUMNS = [
    "step",
    "mean_r",
    "std_r",
    "frac_zero_std",
    "kl",
    "entropy",
    "clip_frac",
    "loss",
    "grad_norm",
    "lr",
    "len_mean",
    "eval_acc",
    "eval_r",
    "time_s",
    "tokens_per_s",
    "skipped",
]


class CSVLogger:
    """Append rows to `path` with a fixed header.

    resume_step=None starts a new file. resume_step=k keeps the rows with step <= k (those the checkpoint
    at step k has seen) and appends after them, so a run killed after logging step k+3 but checkpointing
    at k ends with steps 1..N once each.
    """

    def __init__(self, path, columns, resume_step=None):
        self.path, self.columns = path, list(columns)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if resume_step is not None and os.path.exists(path):
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames != self.columns:
                    raise ValueError(f"{path} has columns {reader.fieldnames}, this run writes {self.columns}")
                kept = [r for r in reader if r["step"] and int(r["step"]) <= resume_step]
            tmp = path + ".tmp"
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.columns)
                w.writeheader()
                w.writerows(kept)
            os.replace(tmp, path)
        else:
            with open(path, "w", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns).writeheader()

    def log(self, row):
        unknown = set(row) - set(self.columns)
        if unknown:
            raise KeyError(f"columns {sorted(unknown)} are not in the header of {self.path}")
        out = {k: _fmt(row.get(k, "")) for k in self.columns}
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns).writerow(out)


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def write_samples(path, step, prompts, completions, rewards, k=4):
    """Append the first k sampled completions of a step, with their total reward, to a text file."""
    with open(path, "a") as f:
        f.write(f"--- step {step}\n")
        for p, c, r in list(zip(prompts, completions, rewards, strict=True))[:k]:
            f.write(f"{r:+.3f}  {p!r} -> {c!r}\n")


def read_csv(path):
    """Rows of a metrics CSV as a dict of column -> list of floats (None where empty, nan where it says nan)."""
    import pandas as pd  # here, not at the top: the drivers import this module and never read a CSV

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)  # every cell as written: "" stays ""
    except pd.errors.EmptyDataError:  # not even a header
        return {}
    return {c: [float(v) if v != "" else None for v in df[c]] for c in df.columns}

"""
PPO training driver, the baseline for GRPO: SFT -> RLHF-PPO on a small character-level GPT, CPU or CUDA.

    python train_ppo.py                                    # arithmetic, the same budget as train_grpo.py
    python train_ppo.py --task shakespeare                 # against the learned reward model, as train_grpo.py
    python train_ppo.py --gamma 1 --gae-lambda 1           # the original's "simplified PPO": MC return - V
    python train_ppo.py --resume                           # continue from <out-dir>/ppo_ckpt.pt
    python train_ppo.py --init-from ckpt.pt --task jsonl:qa.jsonl   # a model and a task you bring, as train_grpo.py

It starts from the same SFT policy as train_grpo.py (<out-dir>/policy.pth, trained first if missing,
also the frozen reference pi_ref), optimises the same reward functions (reward_model.setup_rewards), and
each step sees the same B prompts with G sampled completions each as GRPO's step does: the prompts and
the sampling's random numbers come from the same generator seeded by (--seed, step), so step 1 of both
methods samples the very same completions. PPO does not use the groups: each completion is its own
episode and a value model supplies the baseline. The loss is in ppo.py. Each step:
  rollout  B*G completions; log-probs under pi_old and pi_ref; V(s_t) from the value model
  reward   per token -kl_coef * (logp - ref_logp), plus the task score on the last real token
  GAE      advantages and value targets (--gamma, --gae-lambda), advantages whitened over the batch
  update   --update-epochs passes over the rollout in --num-minibatches shuffled minibatches, each an
           Adam step of the policy (clipped surrogate) and of the value model (clipped value loss),
           each gradient clipped to --grad-clip on its own

The value model is a separate GPT of the policy's shape with a scalar head, initialised from the SFT
policy's weights (its head from zero, so V = 0 at the start). Why a separate network and not a head
on the policy: it is what InstructGPT and "The N Implementation Details of RLHF with PPO" do (there the
critic starts from the reward model; arithmetic has no reward model, and the SFT policy is the nearest
trained network), the value loss cannot pull the policy's features around, and it is the memory bill
the GRPO-vs-PPO comparison is about: policy + value + reference (+ reward model) against GRPO's
policy + reference. With two networks and two Adam optimizers, --vf-coef only scales the value
gradient, which Adam undoes (up to its eps, and to where --grad-clip starts acting); it matters for a
shared trunk, and it weights the value loss inside the logged `loss`.

How this departs from InstructGPT's PPO (and cleanrl's):
  1. Outcome rewards only (one score per completion, the last token); no reward model on arithmetic
     (verifiable rewards), the learned one on shakespeare (the value model still starts from the SFT policy).
  2. A fixed kl_coef, no adaptive KL controller, and no reward scaling or whitening. So --kl-coef is
     relative to the task's score scale: arithmetic scores lie in [0, 1.1], the shakespeare reward
     model's run about 0.3 to 3.7 over a run, so the same kl_coef is a weaker KL there. InstructGPT and
     TRL instead normalise the RM's scores with their mean and std on SFT samples; we keep raw scores
     so that GRPO and PPO optimise the same numbers (GRPO's advantages are scale-free at its default
     --scale group, and at --scale batch; not at --scale none).
  3. No pretraining-loss mix (PPO-ptx) and no entropy bonus.
  4. pi_ref stays the SFT policy; one process only (no DDP: use train_grpo.py for data parallelism).
Every random draw of step s (prompts, sampling, minibatch order) comes from a generator seeded by
(--seed, s), so a resumed run continues exactly as an uninterrupted one (bitwise on CPU).

CSV columns: those of utils/metrics.py where they mean the same thing (kl is the k3 mean of the rollout
policy against pi_ref, as GRPO logs it; loss, grad_norm (the policy's), clip_frac are means over the
step's minibatch updates), plus
  value_loss     clipped value loss (ppo.py), mean over the step's updates
  explained_var  1 - Var[R - V_old] / Var[R] over the rollout's real tokens: how much of the value
                 targets the value model predicted before it trained on them (cleanrl)
  approx_kl      k3 estimate of KL(pi_old || pi_theta) on each minibatch, mean over the updates
  pg_loss        the clipped surrogate alone, mean over the updates
"""

import argparse
import copy
import json
import os
import time
from contextlib import nullcontext
from dataclasses import asdict

import torch
from tqdm import tqdm

from grpo import entropy_from_logits, token_entropy
from model import ValueModel, completion_logprobs
from ppo import explained_variance, gae, masked_mean, masked_whiten, per_token_rewards, ppo_loss
from reward_model import DivergedError, add_rm_args, setup_rewards
from tasks import TaskError, add_task_args, complete, encode_prompts, load_task, total_reward
from utils.ckpt import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from utils.common import (
    HelpFormatter,
    add_run_args,
    at_least,
    console,
    fail,
    is_finite,
    lr_at,
    memory_stats,
    pick_device,
    positive,
)
from utils.init_from import InitError
from utils.metrics import BASE_COLUMNS, CSVLogger, write_samples
from utils.rollouts import (
    add_rollout_args,
    append_rollouts,
    require_wandb,
    rollout_record,
    rollouts_path,
    run_config,
    start_rollouts,
    wandb_rollout_table,
)
from utils.sft import add_init_args, add_model_args, check_model_config, load_policy

# -----------------------------------------------------------------------------
# config

parser = argparse.ArgumentParser(
    usage="%(prog)s [flags]", description=__doc__.split("\n")[1], formatter_class=HelpFormatter
)
task_args = parser.add_argument_group("task")
ppo_args = parser.add_argument_group("PPO (ppo.py: the loss, GAE and the value model)")
rollout_args = parser.add_argument_group("rollout")
optim_args = parser.add_argument_group("optimizer")
model_args = parser.add_argument_group("model (the starting policy; its SFT when --init-from scratch)")
log_args = parser.add_argument_group("logging and evaluation")
run_args = parser.add_argument_group("checkpoint and run")
device_args = parser.add_argument_group("device")
rm_args = parser.add_argument_group(
    "reward model (--task shakespeare --reward rm, trained if <out-dir>/rm.pth is missing)"
)
add_task_args(task_args)
ppo_args.add_argument(
    "--steps",
    type=at_least(1),
    default=None,
    help="PPO steps (rollouts); keep equal to GRPO's (default: the task's rl_steps, arithmetic 1200, shakespeare 100)",
)
ppo_args.add_argument("--batch-size", type=at_least(1), default=32, help="prompts per step (B), as in train_grpo.py")
ppo_args.add_argument(
    "--group-size", type=at_least(1), default=8, help="completions sampled per prompt (G): B*G samples per step"
)
ppo_args.add_argument(
    "--update-epochs",
    "--num-iterations",
    dest="update_epochs",
    type=at_least(1),
    default=2,
    help="passes over each rollout (cleanrl's update_epochs; GRPO's --num-iterations, mu)",
)
ppo_args.add_argument(
    "--num-minibatches", type=at_least(1), default=2, help="minibatches per pass; must divide B*G completions"
)
ppo_args.add_argument(
    "--kl-coef", type=float, default=0.05, help="per-token KL penalty in the reward (k1, InstructGPT)"
)
ppo_args.add_argument("--gamma", type=float, default=1.0, help="discount factor (1: undiscounted, as in RLHF)")
ppo_args.add_argument(
    "--gae-lambda", type=float, default=0.95, help="GAE lambda; --gamma 1 --gae-lambda 1 is the MC return"
)
ppo_args.add_argument("--clip-eps", type=positive(), default=0.2, help="PPO clip range of the policy ratio")
ppo_args.add_argument("--clip-value", type=positive(), default=0.2, help="value clip: V may move this far per rollout")
ppo_args.add_argument("--vf-coef", type=positive(), default=0.1, help="weight of the value loss in the total loss")
ppo_args.add_argument("--no-whiten", action="store_true", help="do not whiten the advantages over the batch")
rollout_args.add_argument(
    "--temperature", type=positive(), default=1.0, help="sampling temperature (log-probs use the same)"
)
parser.add_argument("--top-k", type=int, default=None, help=argparse.SUPPRESS)  # refused below, with the reason
rollout_args.add_argument(
    "--max-new-tokens", type=at_least(1), default=None, help="completion length cap (default: the task's)"
)
optim_args.add_argument("--lr", type=positive(), default=1e-4, help="policy learning rate (Adam)")
optim_args.add_argument("--value-lr", type=positive(), default=3e-4, help="value model learning rate (Adam)")
optim_args.add_argument("--grad-clip", type=positive(), default=1.0, help="clip each model's gradient 2-norm to this")
add_run_args(parser, "ppo", schedule=optim_args, logs=log_args, run=run_args, device=device_args)
add_rollout_args(log_args)
add_init_args(model_args)
add_model_args(model_args)
add_rm_args(rm_args)
args = parser.parse_args()
if args.top_k is not None:  # the same reason as train_grpo.py's
    parser.error(
        "--top-k is not supported for training: the loss, the ratio and the KL need the log-probs of the "
        "distribution the tokens were sampled from, and under top-k that is a truncated one"
    )
if args.n_embd % args.n_head:
    parser.error(f"--n-embd {args.n_embd} is not divisible by --n-head {args.n_head}")
try:
    task = load_task(args.task, args.data)
except TaskError as e:
    fail(str(e))
if getattr(task, "tool", None) is not None:  # PPO's value, GAE and KL reward do not mask environment tokens
    fail(f"--task {args.task}: {task.name} calls a tool; train_ppo.py does not support tools (use train_grpo.py)")
args.out_dir = args.out_dir or os.path.join("out", task.name)
args.steps = args.steps or task.rl_steps
B, G = args.batch_size, args.group_size  # prompts per step, completions per prompt
N = B * G  # completions per step
if N % args.num_minibatches:
    fail(f"--num-minibatches {args.num_minibatches} does not divide the {N} completions of a step (B*G)")
if not (0 <= args.gamma <= 1 and 0 <= args.gae_lambda <= 1):
    fail(f"--gamma {args.gamma} and --gae-lambda {args.gae_lambda} must lie in [0, 1]")
if args.kl_coef < 0:
    fail(f"--kl-coef must be >= 0, got {args.kl_coef}")
if int(os.environ.get("WORLD_SIZE", 1)) > 1:
    fail("train_ppo.py runs in one process; launch it with python, not torchrun")
if args.rollout_groups < 0:
    parser.error(f"--rollout-groups must be >= 0, got {args.rollout_groups}")
wandb = require_wandb(fail) if args.wandb else None

ckpt_path = os.path.join(args.out_dir, "ppo_ckpt.pt")
if args.resume and not os.path.exists(ckpt_path):
    fail(f"--resume: no checkpoint at {ckpt_path}")
device = pick_device(args.device)
device_type = "cuda" if device.startswith("cuda") else "cpu"
ctx = nullcontext() if device_type == "cpu" else torch.autocast(device_type="cuda", dtype=torch.bfloat16)
if device_type == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = True
torch.manual_seed(args.seed)

# -----------------------------------------------------------------------------
# data and models

if args.max_new_tokens:  # one horizon for the rollouts and the held-out evaluation (evaluate reads the task's)
    task.max_new_tokens = args.max_new_tokens
T = task.max_new_tokens
try:
    policy, tok, sft_info = load_policy(task, args, device)
except (CheckpointError, InitError, TaskError) as e:
    fail(str(e))
ref = copy.deepcopy(policy).eval().requires_grad_(False)  # pi_ref: the starting policy, frozen
block_size = policy.config.block_size
try:  # every held-out prompt must be writable in the model's vocabulary and fit with its completion
    encode_prompts(tok, task.heldout, T, block_size)
except TaskError as e:
    fail(f"--task {args.task}: held-out: {e}")

value_model = ValueModel(copy.deepcopy(policy)).to(device)  # body from the starting policy

optimizer = torch.optim.Adam(policy.parameters(), lr=args.lr)
value_optimizer = torch.optim.Adam(value_model.parameters(), lr=args.value_lr)
start_step, elapsed, bad_streak = 0, 0.0, 0
if args.resume:
    try:
        ck = load_checkpoint(ckpt_path, map_location=device)
        check_model_config(ck["model_config"], policy.config, ckpt_path)
    except CheckpointError as e:
        fail(f"--resume: {e}")
    if ck["task"] != task.name:
        fail(f"--resume: {ckpt_path} is a {ck['task']} run, not {task.name}")
    if ck["config"].get("init_from", "scratch") != args.init_from:  # the reference would differ
        fail(
            f"--resume: {ckpt_path} started from --init-from {ck['config'].get('init_from', 'scratch')}, not {args.init_from}"
        )
    policy.load_state_dict(ck["policy"])
    value_model.load_state_dict(ck["value_model"])
    optimizer.load_state_dict(ck["optimizer"])
    value_optimizer.load_state_dict(ck["value_optimizer"])
    start_step, elapsed = ck["step"], ck["elapsed"]
    set_rng_state(ck["rng"])
    print(f"resumed from {ckpt_path} at step {start_step}")
    before = {k: ck["config"].get(k) for k in ("steps", "lr", "value_lr", "lr_schedule", "warmup_frac")}
    if args.lr_schedule != "constant" and before != {k: getattr(args, k) for k in before}:
        print(f"note: the learning-rate schedule now follows these flags, not the checkpoint's run ({before})")

sft_eval = task.evaluate(ref, tok, device)  # pi_ref is the SFT policy, also after --resume
start = "SFT policy" if args.init_from == "scratch" else "starting policy"
print(f"{start} ({policy.num_params() / 1e6:.2f}M params) held-out: {console(sft_eval)}")
train_model = torch.compile(policy) if args.compile else policy

try:
    reward_funcs, gold_fn = setup_rewards(task, args, device, log=print)
except (CheckpointError, ValueError) as e:
    fail(str(e))
except DivergedError as e:
    fail(f"reward model: {e}", code=1)
reward_names = [name for name, _, _ in reward_funcs]
ppo_columns = ["value_loss", "explained_var", "approx_kl", "pg_loss"]
columns = BASE_COLUMNS + [f"r_{n}" for n in reward_names] + ppo_columns + (["gold_r"] if gold_fn else [])
step_metrics = getattr(task, "step_metrics", None)  # a task's own per-step rollout columns
columns += list(step_metrics(task.heldout[:1], [""])) if step_metrics else []
columns += [k for k in sft_eval if k not in columns]  # a task's own evaluation keys
logger = CSVLogger(args.log, columns, resume_step=start_step if args.resume else None)
samples_path = os.path.splitext(args.log)[0] + "_samples.txt"
if not args.resume and os.path.exists(samples_path):
    os.remove(samples_path)
if not args.resume:  # step 0: the starting policy, so every curve starts where RL starts
    logger.log({"step": 0, **sft_eval})
rollouts_file = rollouts_path(args.log)  # a few groups token by token, for view.py (utils/rollouts.py)
start_rollouts(rollouts_file, resume_step=start_step if args.resume else None)
if wandb:
    wandb.init(project=args.wandb_project, name=args.wandb_run_name, config=vars(args), resume="allow")
    if not args.resume:
        wandb.log({"step": 0, **sft_eval}, step=0)


def rollout(prompts, u):
    """Sample G completions for each prompt (left-padded to the longest). Returns (seq (B*G, P+T),
    completions text, prompt_mask (B*G, P) 1 = real prompt token, mask (B*G, T) 1 = completion token)."""
    try:
        with ctx:
            texts, seq, pmask, mask, _ = complete(
                policy, tok, [p for p in prompts for _ in range(G)], T, uses_eos=task.uses_eos,
                temperature=args.temperature, uniforms=u, device=device, block_size=block_size,
            )  # fmt: skip
    except TaskError as e:
        fail(f"--task {args.task}: {e}")
    return seq, texts, pmask, mask


# -----------------------------------------------------------------------------
# training loop

pbar = tqdm(range(start_step + 1, args.steps + 1), disable=args.no_progress, desc="ppo", dynamic_ncols=True)
t_start = time.time() - elapsed
for step in pbar:
    t_step = time.time()
    # --- rollout: the same generator, prompts and random numbers as train_grpo.py's step
    g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
    prompts = task.sample_prompts(g, B)
    u = torch.rand(N, T, generator=g)
    seq, texts, pmask, mask = rollout(prompts, u)
    P = pmask.size(1)
    try:
        scores, parts = total_reward(reward_funcs, [p for p in prompts for _ in range(G)], texts)
    except TaskError as e:
        fail(str(e))
    scores = torch.tensor(scores, device=device)  # (N,)
    # --- pi_old, pi_ref and V_old on the rollout (no grad). pi_old is recomputed with the training
    # forward rather than taken from generate(), so that ratio == 1 exactly before the first update
    with torch.no_grad(), ctx:
        old_logp, logits = completion_logprobs(policy, seq, P, args.temperature, pmask)  # (N, T), (N, T, V)
        ref_logp, _ = completion_logprobs(ref, seq, P, args.temperature, pmask)  # (N, T)
        old_values = value_model(seq, P, pmask).float()  # (N, T)
    old_logp, ref_logp = old_logp.float(), ref_logp.float()
    entropy = entropy_from_logits(logits, mask).item()
    d = ref_logp - old_logp
    kl_k3 = masked_mean(torch.exp(d) - d - 1, mask).item()  # the rollout policy's KL to pi_ref, as GRPO logs it
    # --- per-token rewards, GAE, whitening
    rewards, _ = per_token_rewards(scores, old_logp, ref_logp, mask, kl_coef=args.kl_coef)  # (N, T)
    advantages, returns = gae(rewards, old_values, mask, gamma=args.gamma, lam=args.gae_lambda)  # (N, T)
    adv_gae = advantages  # before whitening (the rollouts file shows both)
    if not args.no_whiten:
        advantages = masked_whiten(advantages, mask)
    explained_var = explained_variance(old_values, returns, mask).item()
    # --- update-epochs passes of num-minibatches minibatches over the rollout
    mb_size = N // args.num_minibatches
    lr_frac = lr_at(step, args.steps, 1.0, args.warmup_frac, args.lr_schedule)  # both networks follow the schedule
    for opt, peak in ((optimizer, args.lr), (value_optimizer, args.value_lr)):
        for pg in opt.param_groups:
            pg["lr"] = peak * lr_frac
    losses, norms, bad, n_tried = [], [], False, 0
    sums = {k: 0.0 for k in ("clip_frac", "value_loss", "approx_kl", "pg_loss")}
    # a NaN in a later minibatch undoes the step's earlier updates too: the step is skipped as a whole
    saved = copy.deepcopy([m.state_dict() for m in (policy, value_model, optimizer, value_optimizer)])
    for _epoch in range(args.update_epochs):
        perm = torch.randperm(N, generator=g).to(device)  # drawn from the step's generator: resumable
        for start in range(0, N, mb_size):
            mb = perm[start : start + mb_size]
            with ctx:
                logp, _ = completion_logprobs(train_model, seq[mb], P, args.temperature, pmask[mb])  # (mb, T)
                values = value_model(seq[mb], P, pmask[mb])  # (mb, T)
            loss, stats = ppo_loss(
                logp,
                old_logp[mb],
                values.float(),
                old_values[mb],
                advantages[mb],
                returns[mb],
                mask[mb],
                clip_eps=args.clip_eps,
                clip_value=args.clip_value,
                vf_coef=args.vf_coef,
            )
            if step in args.debug_nan_steps and n_tried == args.debug_nan_update:
                loss = loss * float("nan")  # fault injection (tests only)
            n_tried += 1
            optimizer.zero_grad(set_to_none=True)
            value_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # each network clipped on its own, so a large value gradient cannot shrink the policy's step
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), args.grad_clip)
            value_grad_norm = torch.nn.utils.clip_grad_norm_(value_model.parameters(), args.grad_clip)
            if not (is_finite(loss.detach()) and is_finite(grad_norm) and is_finite(value_grad_norm)):
                optimizer.zero_grad(set_to_none=True)
                value_optimizer.zero_grad(set_to_none=True)
                for m, state in zip((policy, value_model, optimizer, value_optimizer), saved, strict=True):
                    m.load_state_dict(state)  # parameters and Adam states as they were before the step
                losses, norms, bad = [], [], True
                sums = {k: 0.0 for k in sums}
                break
            optimizer.step()
            value_optimizer.step()
            losses.append(loss.item())
            norms.append(grad_norm.item())
            for k in sums:
                sums[k] += stats[k].item()
        if bad:
            break
    bad_streak = bad_streak + 1 if bad else 0
    # --- logging
    dt = time.time() - t_step
    n_tok = float(mask.sum())
    n_up = len(losses)
    row = {
        "step": step,
        "mean_r": scores.mean().item(),
        "std_r": scores.std().item(),
        "frac_zero_std": (scores.view(B, G).std(dim=1) == 0).float().mean().item() if G > 1 else "",
        "kl": kl_k3,
        "entropy": entropy,
        "lr": args.lr * lr_frac,
        "len_mean": n_tok / N,
        "time_s": time.time() - t_start,
        "tokens_per_s": n_tok / dt,
        "skipped": int(bad),
        "explained_var": explained_var,
    }
    if n_up:  # no fake numbers for a step whose updates were all skipped
        row.update({"loss": sum(losses) / n_up, "grad_norm": sum(norms) / n_up})
        row.update({k: v / n_up for k, v in sums.items()})
    for name in reward_names:
        row[f"r_{name}"] = sum(parts[name]) / len(parts[name])
    prompts_n = [p for p in prompts for _ in range(G)]
    if gold_fn is not None:
        gold = gold_fn(prompts_n, texts)
        row["gold_r"] = sum(gold) / len(gold)
    if step_metrics:
        row.update(step_metrics(prompts_n, texts))
    if step % args.eval_every == 0 or step == args.steps:
        row.update(task.evaluate(policy, tok, device))
        write_samples(samples_path, step, prompts_n, texts, scores.tolist())
    n_show = min(args.rollout_groups, B) * G  # the first groups, token by token (utils/rollouts.py, view.py)
    if n_show and (step == 1 or step % args.eval_every == 0 or step == args.steps):
        stats = {"logp": old_logp, "ref_logp": ref_logp, "adv_gae": adv_gae, "value": old_values, "logits": logits}
        stats = {k: v[:n_show] for k, v in stats.items()}  # the rollout's own numbers, no extra forward
        d = stats["ref_logp"] - stats["logp"]
        stats.update(kl=torch.exp(d) - d - 1, entropy=token_entropy(stats.pop("logits")))  # k3, as logged
        groups = [(prompts[b], texts[b * G : (b + 1) * G]) for b in range(n_show // G)]
        parts_shown = {n: v[:n_show] for n, v in parts.items()}
        record = rollout_record(
            step, "ppo", tok, groups, seq[:n_show], P, mask[:n_show], scores[:n_show], parts_shown,
            advantages[:n_show], stats, uses_eos=task.uses_eos,
        )  # fmt: skip
        append_rollouts(rollouts_file, {**record, **run_config(args)})
        if wandb:
            wandb.log({"rollouts": wandb_rollout_table(wandb, record)}, step=step)
    logger.log(row)
    if wandb:
        wandb.log({k: v for k, v in row.items() if v != ""}, step=step)
    # the console rounds to 3 significant digits (the loss to 4); the CSV keeps every digit
    short = {k: console(row[k]) for k in ("mean_r", "kl", "entropy", "explained_var") if isinstance(row[k], float)}
    if isinstance(row.get("loss"), float):  # none when every update of the step was skipped
        short["loss"] = console(row["loss"], 4)
    if "eval_acc" in row:
        short["acc"] = console(row["eval_acc"])
    pbar.set_postfix(short)
    if args.no_progress and (step % args.eval_every == 0 or step == args.steps):
        print(f"step {step}: " + " ".join(f"{k} {v}" for k, v in short.items()), flush=True)
    if bad_streak >= args.max_bad_steps:  # after logging, so the CSV shows every skipped step
        msg = f"{bad_streak} steps in a row had a NaN/inf loss or gradient (last: step {step}); stopping"
        fail(f"{msg}, last good checkpoint kept at {ckpt_path}", code=1)
    # --- checkpoint: only after a good step, from a finite state
    if not bad and (step % args.ckpt_every == 0 or step == args.steps):
        if not all(is_finite(p) for m in (policy, value_model) for p in m.parameters()):
            fail(f"non-finite parameters at step {step}; not writing a checkpoint", code=1)
        ck = {
            "policy": policy.state_dict(),
            "value_model": value_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "value_optimizer": value_optimizer.state_dict(),
            "step": step,
            "elapsed": time.time() - t_start,
            "rng": rng_state(),
            "config": {k: v for k, v in vars(args).items()},
            "model_config": asdict(policy.config),
            "task": task.name,
        }
        save_checkpoint(ck, ckpt_path)

# -----------------------------------------------------------------------------
# summary

final_eval = task.evaluate(policy, tok, device)
memory = memory_stats(device, [policy], [ref], [optimizer])  # what GRPO holds too
value_memory = memory_stats(device, [value_model], [], [value_optimizer])  # what only PPO holds
memory.update({f"value_{k}": value_memory[k] for k in ("params_mib", "grads_mib", "optimizer_mib")})
summary = {
    "task": task.name,
    "steps": args.steps,
    "sft": sft_info,
    "sft_eval": sft_eval,
    "final_eval": final_eval,
    "ppo_time_s": round(time.time() - t_start, 1),
    "device": device,
    "samples_seen": (args.steps - start_step) * N,  # this invocation's sampled completions
    "memory": memory,
}
with open(os.path.join(args.out_dir, "ppo_summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
if wandb:
    wandb.finish()
print(
    f"held-out {task.name}: SFT {console(sft_eval)} -> PPO {console(final_eval)} in {summary['ppo_time_s']}s; log {args.log}"
)

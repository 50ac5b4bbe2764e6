"""
GRPO training driver: SFT -> GRPO on a small character-level GPT (or a model you bring), on CPU or CUDA.

    python train_grpo.py                                   # arithmetic, default flags, a few minutes on 2 cores
    python train_grpo.py --task shakespeare                # RLHF against a learned reward model
    python train_grpo.py --resume                          # continue from <out-dir>/grpo_ckpt.pt
    torchrun --standalone --nproc_per_node=2 train_grpo.py # data-parallel (gloo on CPU, nccl on CUDA)
    torchrun --standalone --nproc_per_node=2 train_grpo.py --rollout-workers 1   # async: 1 sampler, 1 learner
    python train_grpo.py --init-from ../nanoGPT/out-shakespeare-char/ckpt.pt --task shakespeare
    python train_grpo.py --init-from gpt2 --task jsonl:qa.jsonl --device cuda   # GPT-2 weights, your data
    python train_grpo.py --init-from gpt2 --task jsonl:qa.jsonl --micro-batch-size 8 --logits-chunk-size 1024
    python train_grpo.py --task examples/reverse_task.py:ReverseTask          # your own task class

With no <out-dir>/policy.pth (default out/<task>) the SFT policy is trained first and saved there; it is
also the frozen reference pi_ref. --init-from starts from a nanoGPT checkpoint, a policy.pth or GPT-2
weights instead (utils/init_from.py, no SFT); --task takes a task file or a JSONL dataset
(tasks/base.py, the task interface). Prompts of different lengths are left-padded (model.py). On shakespeare the reward is a learned reward model's score
(<out-dir>/rm.pth; with none there, preference pairs are sampled from the SFT policy and the reward
model is trained first: simple_example.py, reward_model.py) and the rule it was trained to imitate is
logged beside it as gold_r; --reward rule optimises the rule itself. Each step: B prompts x G completions are sampled with the KV cache, scored by the
task's reward functions, turned into group-relative advantages and used for mu clipped updates with a
k3 KL penalty (grpo.py). How this departs from DeepSeekMath's GRPO:
  1. Outcome rewards only (one reward per completion), no process supervision; arithmetic has
     rule-based, verifiable rewards as in DeepSeek-R1, shakespeare a learned reward model.
  2. pi_ref stays the SFT policy for the whole run (the paper's iterative GRPO resets it).
  3. With mu = 1 (the default) old_logp is logp.detach(): ratio == 1 and the clip never acts.
  4. Truncated completions (no end token within --max-new-tokens) stay in the loss with all their
     tokens; they get no reward, so the policy learns to stop (--mask-truncated: DAPO's overlong filtering).
  5. --dynamic-sampling (DAPO) drops groups whose rewards are all equal and samples more prompts;
     mean_r, std_r and len_mean are then logged on the first, unfiltered draw of the step, kept_groups
     counts the informative groups trained on (utils/metrics.py defines every column). Under DDP each
     rank filters and resamples its own slice, so ranks may train on different numbers of groups and
     the run no longer matches one process (only --loss-type dapo keeps a global normaliser).
  6. A cosine learning-rate schedule with warmup (--lr-schedule), which the paper does not specify.
Every random draw of step s comes from a generator seeded by (--seed, s), so a resumed run and a run
split across DDP ranks sample exactly what one uninterrupted process would.
"""

import argparse
import copy
import json
import math
import os
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from grpo import (
    clip_range,
    group_advantages,
    grpo_loss,
    off_policy_weight,
    token_entropy,
    token_entropy_pieces,
    truncated,
)
from model import completion_logprobs, completion_logprobs_chunked
from reward_model import DivergedError, add_rm_args, setup_rewards
from tasks import TaskError, add_task_args, complete, encode_prompts, load_task, total_reward, trigger_id
from utils import async_rl
from utils.ckpt import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from utils.common import (
    HelpFormatter,
    add_run_args,
    at_least,
    compute_cleanup,
    compute_init,
    console,
    fail,
    is_finite,
    lr_at,
    memory_stats,
    pick_device,
    positive,
    print0,
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
    token_stats,
    wandb_rollout_table,
)
from utils.sft import add_init_args, add_model_args, check_model_config, load_policy

TOP_K_REFUSED = (
    "--top-k is not supported for training: under top-k the tokens come from a truncated distribution, while the "
    "ratio, the policy gradient and the KL use the log-probs of the full softmax, a different policy"
)

# -----------------------------------------------------------------------------
# config

parser = argparse.ArgumentParser(
    usage="%(prog)s [flags]", description=__doc__.split("\n")[1], formatter_class=HelpFormatter
)
task_args = parser.add_argument_group("task")
grpo_args = parser.add_argument_group("GRPO (grpo.py: the loss and its variants)")
rollout_args = parser.add_argument_group("rollout")
optim_args = parser.add_argument_group("optimizer")
model_args = parser.add_argument_group("model (the starting policy; its SFT when --init-from scratch)")
memory_args = parser.add_argument_group("memory (docs/memory.md: the same gradients in less memory)")
log_args = parser.add_argument_group("logging and evaluation")
run_args = parser.add_argument_group("checkpoint and run")
device_args = parser.add_argument_group("device (DDP: launch with torchrun, no flag)")
async_args = parser.add_argument_group(
    "async rollouts (docs/async.md: torchrun --nproc_per_node=K+1 ... --rollout-workers K)"
)
rm_args = parser.add_argument_group(
    "reward model (--task shakespeare --reward rm, trained if <out-dir>/rm.pth is missing)"
)
add_task_args(task_args)
grpo_args.add_argument(
    "--steps",
    type=at_least(1),
    default=None,
    help="GRPO optimizer steps (default: the task's rl_steps, arithmetic 1200, shakespeare 100)",
)
grpo_args.add_argument("--batch-size", type=at_least(1), default=32, help="prompts per step (B), over all ranks")
grpo_args.add_argument("--group-size", type=at_least(2), default=8, help="completions per prompt (G)")
grpo_args.add_argument("--num-iterations", type=at_least(1), default=1, help="updates per rollout (mu)")
grpo_args.add_argument("--beta", type=float, default=0.04, help="weight of the k3 KL penalty to pi_ref")
grpo_args.add_argument(
    "--clip-eps",
    type=positive(),
    default=None,
    help="PPO clip range (both sides); default: 0.2, or 3e-4 with --importance-level sequence (GSPO)",
)
grpo_args.add_argument(
    "--clip-eps-high",
    type=positive(),
    default=None,
    help="upper clip (DAPO clip-higher); default: --clip-eps if given, else 0.2, or 4e-4 per sequence (GSPO)",
)
grpo_args.add_argument(
    "--loss-type",
    choices=["grpo", "bnpo", "dapo", "dr_grpo", "cispo"],
    default="grpo",
    help="token aggregation, or cispo (MiniMax-M1's clipped-weight REINFORCE, token-normalised), see grpo.py",
)
grpo_args.add_argument(
    "--importance-level",
    choices=["token", "sequence"],
    default="token",
    help="importance ratio per token (GRPO) or one per completion (GSPO), see grpo.py",
)
grpo_args.add_argument(
    "--cispo-eps-max", type=positive(), default=5.0, help="--loss-type cispo: cap on the importance weight"
)
grpo_args.add_argument(
    "--delta",
    type=positive(),
    default=None,
    help="two-sided clip (INTELLECT-2): cap on the ratio, > 1 + upper clip (default: no cap)",
)
grpo_args.add_argument(
    "--mask-truncated",
    action="store_true",
    help="DAPO overlong filtering: completions with no end token leave the loss",
)
grpo_args.add_argument(
    "--top-entropy-quantile",
    type=float,
    default=1.0,
    help="policy gradient only on this top fraction of tokens by entropy (Wang et al. 2025: 0.2); 1 = all",
)
grpo_args.add_argument(
    "--entropy-coef", type=float, default=0.0, help="weight of an entropy bonus (true entropy) subtracted from the loss"
)
grpo_args.add_argument(
    "--tool-cost",
    type=float,
    default=0.0,
    help="reward charged per tool call (a task with a tool: the trigger characters of the completion), logged as "
    "r_tool_cost; held-out eval_r stays the task's reward",
)
grpo_args.add_argument(
    "--scale", choices=["group", "batch", "none"], default="group", help="advantage std normalisation, see grpo.py"
)
rollout_args.add_argument(
    "--temperature", type=positive(), default=1.0, help="sampling temperature (log-probs use the same)"
)
parser.add_argument("--top-k", type=int, default=None, help=argparse.SUPPRESS)  # refused below, with the reason
rollout_args.add_argument(
    "--max-new-tokens", type=at_least(1), default=None, help="completion length cap (default: the task's)"
)
rollout_args.add_argument(
    "--dynamic-sampling", action="store_true", help="DAPO: drop groups with all-equal rewards, sample more"
)
rollout_args.add_argument(
    "--max-resample", type=at_least(1), default=4, help="dynamic sampling: most extra rollouts per step"
)
async_args.add_argument(
    "--rollout-workers",
    type=at_least(1),
    default=None,
    help="K of the torchrun ranks only sample and score, rank 0 trains; rollouts and weights go by torch.distributed",
)
async_args.add_argument(
    "--max-staleness",
    type=at_least(0),
    default=None,
    help="S: step s trains on a batch sampled by the policy of S steps before (workers wait for it); 0 = in lockstep "
    "(default: 1)",
)
async_args.add_argument(
    "--off-policy",
    choices=["none", "tis", "mis", "decoupled"],
    default="none",
    help="correction for samples of an older policy (grpo.py): none = ratio against the behaviour policy; tis, mis, "
    "decoupled = ratio against the learner's, samples reweighted",
)
async_args.add_argument(
    "--is-cap",
    type=positive(),
    default=2.0,
    help="C: cap on the importance weights of --off-policy tis, mis, decoupled",
)
optim_args.add_argument("--lr", type=positive(), default=3e-4, help="learning rate (Adam)")
optim_args.add_argument("--grad-clip", type=positive(), default=1.0, help="clip the gradient's total 2-norm to this")
memory_args.add_argument(
    "--micro-batch-size",
    type=at_least(1),
    default=None,
    help="completions per forward/backward on each rank, gradients accumulated to exactly the whole batch's "
    "(default: the rank's whole batch at once)",
)
memory_args.add_argument(
    "--logits-chunk-size",
    type=at_least(1),
    default=None,
    help="completion positions per chunk of the output layer in the training-time log-probs: never holds the "
    "(N, T, V) logits, backward recomputes each chunk's (default: all positions at once)",
)
add_run_args(parser, "grpo", torchrun=True, schedule=optim_args, logs=log_args, run=run_args, device=device_args)
add_rollout_args(log_args)
# tests only (tests/test_logged_numbers.py): save per-update diagnostics and gradients to this file
parser.add_argument("--debug-trace", default=None, help=argparse.SUPPRESS)
add_init_args(model_args)
add_model_args(model_args)
add_rm_args(rm_args)
args = parser.parse_args()
if args.top_k is not None:  # the loss needs log-probs of the distribution the tokens were sampled from
    parser.error(TOP_K_REFUSED)
if args.n_embd % args.n_head:
    parser.error(f"--n-embd {args.n_embd} is not divisible by --n-head {args.n_head}")
if not 0 < args.top_entropy_quantile <= 1:
    parser.error(f"--top-entropy-quantile must be in (0, 1], got {args.top_entropy_quantile}")
if args.entropy_coef < 0:
    parser.error(f"--entropy-coef must be >= 0 (a bonus), got {args.entropy_coef}")
eps_high = clip_range(args.importance_level, args.clip_eps, args.clip_eps_high)[1]
if args.delta is not None and (args.loss_type == "cispo" or args.delta <= 1 + eps_high):
    parser.error(f"--delta must exceed 1 + the upper clip ({1 + eps_high:g}) and is not for --loss-type cispo")
if args.is_cap <= 1:
    parser.error(f"--is-cap must exceed 1, got {args.is_cap}")
if args.max_staleness is not None and not args.rollout_workers:
    parser.error("--max-staleness bounds the lag of the rollout workers' samples: it needs --rollout-workers")
args.max_staleness = 1 if args.max_staleness is None else args.max_staleness
if args.rollout_workers and args.dynamic_sampling:
    parser.error("--dynamic-sampling resamples within a step; with --rollout-workers each batch is sampled once")
if args.rollout_groups < 0:
    parser.error(f"--rollout-groups must be >= 0, got {args.rollout_groups}")
wandb = require_wandb(fail) if args.wandb else None
try:
    task = load_task(args.task, args.data)
except TaskError as e:
    fail(str(e))
if args.tool_cost and getattr(task, "tool", None) is None:
    fail(f"--tool-cost charges each call of the task's tool, and task {task.name} has no tool")
if not (math.isfinite(args.tool_cost) and args.tool_cost >= 0):
    fail(f"--tool-cost must be a finite number >= 0, got {args.tool_cost}")
if args.mask_truncated and not task.uses_eos:
    fail(f"--mask-truncated: {task.name} completions have no end token (uses_eos=False), every one would be dropped")
args.out_dir = args.out_dir or os.path.join("out", task.name)
args.steps = args.steps or task.rl_steps

ckpt_path = os.path.join(args.out_dir, "grpo_ckpt.pt")
if args.resume and not os.path.exists(ckpt_path):
    fail(f"--resume: no checkpoint at {ckpt_path}")
device = pick_device(args.device)
ddp, rank, local_rank, world, device = compute_init(device)
master = rank == 0
K = args.rollout_workers  # async (utils/async_rl.py): rank 0 trains, ranks 1..K sample; None: every rank trains
worker = K is not None and rank > 0
if K is not None:
    if world != K + 1:
        fail(
            f"--rollout-workers {K} needs torchrun with --nproc_per_node={K + 1} (one learner), got {world} process(es)"
        )
    ddp, world = False, 1  # one learner: no DDP wrapper, no collective over the training ranks
if args.batch_size % world:
    fail(f"--batch-size {args.batch_size} is not divisible by the {world} DDP processes")
B, G = args.batch_size // world, args.group_size  # prompts per rank, completions per prompt
shard = 0 if K else rank  # this rank's slice of each step's batch (a rollout worker samples all of it)
if args.micro_batch_size and args.micro_batch_size < B * G and args.top_entropy_quantile < 1:
    fail("--top-entropy-quantile < 1 takes its threshold over the rank's whole batch, not per micro-batch: "
         f"use a --micro-batch-size of at least {B * G} (the rank's B*G completions) with it")  # fmt: skip
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
    policy, tok, sft_info = load_policy(task, args, device, master, log=print0)
except (CheckpointError, InitError, TaskError) as e:
    fail(str(e))
ref = copy.deepcopy(policy).eval().requires_grad_(False)  # pi_ref: the starting policy, frozen
block_size = policy.config.block_size
try:  # every held-out prompt must be writable in the model's vocabulary and fit with its completion
    encode_prompts(tok, task.heldout, T, block_size)
except TaskError as e:
    fail(f"--task {args.task}: held-out: {e}")

optimizer = torch.optim.Adam(policy.parameters(), lr=args.lr)
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
    optimizer.load_state_dict(ck["optimizer"])
    start_step, elapsed = ck["step"], ck["elapsed"]
    set_rng_state(ck["rng"])
    print0(f"resumed from {ckpt_path} at step {start_step}")
    before = {k: ck["config"].get(k) for k in ("steps", "lr", "lr_schedule", "warmup_frac")}
    if args.lr_schedule != "constant" and before != {k: getattr(args, k) for k in before}:
        print0(f"note: the learning-rate schedule now follows these flags, not the checkpoint's run ({before})")


def evaluate(model):
    """The task's held-out evaluation; a tool that fails there stops the run in one line, as in a rollout."""
    try:
        return task.evaluate(model, tok, device)
    except TaskError as e:
        fail(f"--task {args.task}: held-out: {e}")


sft_eval = evaluate(ref) if master else {}  # pi_ref is the SFT policy, also after --resume
start = "SFT policy" if args.init_from == "scratch" else "starting policy"
print0(f"{start} ({policy.num_params() / 1e6:.2f}M params) held-out: {console(sft_eval)}")
train_model = torch.compile(policy) if args.compile else policy
if ddp:
    train_model = DDP(train_model, device_ids=[local_rank] if device_type == "cuda" else None)

try:
    reward_funcs, gold_fn = setup_rewards(task, args, device, master, log=print0)
except (CheckpointError, ValueError) as e:
    fail(str(e))
except DivergedError as e:
    fail(f"reward model: {e}", code=1)
if args.tool_cost:  # a reward part, so every column and the advantages see it as any other part

    def tool_cost(prompts, completions, c=args.tool_cost, trigger=task.tool_trigger):
        """-c per call: the trigger characters of the completion (a tool whose replies held the trigger
        character would be charged for them too; the calculator writes digits or '?')."""
        return [-c * t.count(trigger) for t in completions]

    reward_funcs = [*reward_funcs, ("tool_cost", tool_cost, 1.0)]
reward_names = [name for name, _, _ in reward_funcs]
columns = BASE_COLUMNS + [f"r_{n}" for n in reward_names] + ["kept_groups"] + (["gold_r"] if gold_fn else [])
columns += ["tool_frac", "tool_calls", "env_frac"] if getattr(task, "tool", None) else []
step_metrics = getattr(task, "step_metrics", None)  # a task's own per-step rollout columns
columns += list(step_metrics(task.heldout[:1], [""])) if step_metrics else []
columns += [k for k in sft_eval if k not in columns]  # a task's own evaluation keys
off_policy = K is not None or args.off_policy != "none"  # samples that may come from another policy than pi_prox
columns += (["policy_lag", "wait_s"] if K else []) + (["behav_kl"] if off_policy else [])
columns += ["is_weight", "is_capped_frac"] if args.off_policy != "none" else []
if master:
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


def all_mean(x):
    """Mean of a float over DDP ranks (identity without DDP)."""
    if not ddp:
        return x
    t = torch.tensor(float(x), device=device)
    dist.all_reduce(t)
    return t.item() / world


def all_sum(x):
    """Sum of a float over DDP ranks (identity without DDP)."""
    return all_mean(x) * world


def token_mean(local_mean, n_local):
    """The global token mean from each rank's masked mean over its n_local tokens (ranks' counts differ)."""
    return all_sum(float(local_mean) * float(n_local)) / max(all_sum(float(n_local)), 1.0)


def gather(values):
    """All ranks' 1-D values concatenated in rank order, and this rank's offset in it (x, 0 without DDP)."""
    local = torch.as_tensor(values, dtype=torch.float).flatten().cpu()
    if not ddp:
        return local, 0
    parts = [None] * world
    dist.all_gather_object(parts, local.tolist())
    return torch.tensor([v for part in parts for v in part]), sum(len(part) for part in parts[:rank])


def gather_texts(prompts, texts):
    """All ranks' prompts and completion texts, in rank order (the lists themselves without DDP)."""
    if not ddp:
        return prompts, texts
    parts = [None] * world
    dist.all_gather_object(parts, (prompts, texts))
    return [p for part in parts for p in part[0]], [t for part in parts for t in part[1]]


trace = [] if args.debug_trace and master else None


def trace_update(step, it, logp, old, mask, stats):
    """--debug-trace (tests): what one update saw, and its gradient (all-reduced, before clipping)."""
    if trace is None:
        return
    m = mask.bool()
    trace.append(
        {
            "step": step,
            "it": it,
            "max_abs_logratio": (logp.detach() - old)[m].abs().max().item(),  # 0 when pi_theta == pi_old
            "clip_frac": stats["clip_frac"].item(),
            "grads": {n: p.grad.detach().clone() for n, p in policy.named_parameters() if p.grad is not None},
        }
    )


tool = getattr(task, "tool", None)  # multi-turn rollouts: the environment's replies are written in (tasks/rollout.py)
if tool is not None:
    try:
        call_id = trigger_id(tok, task.tool_trigger)
    except TaskError as e:
        fail(f"--task {args.task}: {e}")


def rollout(prompts, u):
    """Sample G completions for each prompt (left-padded to the longest). Returns (seq (n*G, P+T),
    completions text, prompt_mask (n*G, P) 1 = real prompt token, mask (n*G, T) 1 = completion token,
    env_mask (n*G, T) 1 = a token the task's tool wrote, behav_logp (n*G, T) the sampler's log-probs).
    Raises TaskError (a bad prompt, a tool that failed)."""
    with ctx:
        return complete(
            policy, tok, [p for p in prompts for _ in range(G)], T, uses_eos=task.uses_eos,
            temperature=args.temperature, uniforms=u, device=device, block_size=block_size,
            tool=tool, tool_trigger=getattr(task, "tool_trigger", None), return_logp=True,
        )  # fmt: skip


def step_prompts(g):
    """One draw of the global batch's prompts and random numbers from g: this rank's slice (prompts, u)."""
    prompts_all = task.sample_prompts(g, args.batch_size)
    u_all = torch.rand(args.batch_size * G, T, generator=g)
    return prompts_all[shard * B : (shard + 1) * B], u_all[shard * B * G : (shard + 1) * B * G]


def sample_draw(prompts, u):
    """Roll out and score this rank's prompts: the draw dict the step trains on. Raises TaskError."""
    texts, seq, pmask, mask, env_mask, behav_logp = rollout(prompts, u)
    # the environment's tokens are context, never trained on: out of the mask every loss term, normaliser
    # and column below sees
    mask = mask * (1 - env_mask)  # (n*G, T)
    rewards, parts = total_reward(reward_funcs, [p for p in prompts for _ in range(G)], texts)
    draw = dict(prompts=prompts, seq=seq, pmask=pmask, texts=texts, mask=mask, r=torch.tensor(rewards), parts=parts)
    draw["env_mask"], draw["behav_logp"] = env_mask, behav_logp
    return draw


def add_calls(draw):
    """Calls per completion, the trigger tokens the policy wrote (a task with a tool), into the draw."""
    if tool is not None:
        draw["calls"] = ((draw["seq"][:, draw["pmask"].size(1) :] == call_id) * draw["mask"]).sum(1)  # (n*G,)
    return draw


def step_generator(step):
    """The generator of every random draw of a step, seeded by (--seed, step): resumed, split or async runs
    sample what one uninterrupted process would."""
    return torch.Generator().manual_seed(args.seed * 1_000_003 + step)


def gloo_reason(e):
    """The reason in a gloo error's first line, without the source location: 'Read error ...: Connection reset'."""
    return re.sub(r"^\[[^\]]*\]\s*", "", str(e).splitlines()[0] if str(e) else repr(e))[:100]


def receive_draw(step, prompts):
    """The learner's side: the batch the step's worker sampled, as the draw dict sample_draw makes (prompts: the
    step's own, which the worker drew from the same generator). A worker that failed or died stops the run."""
    src = async_rl.owner(step, start_step, K)
    try:
        b = async_rl.recv_batch(src)
    except async_rl.WorkerError as e:  # e.g. a tool that raised: the message names the prompt
        fail(f"rollout worker on rank {src}, step {step}: {e}")
    except RuntimeError as e:  # gloo: the worker's connection closed (killed, crashed) or timed out
        fail(
            f"rollout worker on rank {src} stopped before sending step {step} ({gloo_reason(e)}); "
            f"the last checkpoint, {ckpt_path}, resumes with --resume",
            code=1,
        )
    if b["step"] != step or b["seq"].size(0) != len(prompts) * G:
        fail(f"rollout worker on rank {src} sent step {b['step']} ({b['seq'].size(0)} rows) for step {step}", code=1)
    out = b["seq"][:, b["pmask"].size(1) :].tolist()
    texts = [tok.decode_completion(r) for r in out] if task.uses_eos else [tok.decode(r) for r in out]
    parts = {name: b["parts"][:, i].tolist() for i, (name, _, _) in enumerate(reward_funcs)}
    draw = dict(prompts=prompts, seq=b["seq"].to(device), pmask=b["pmask"].to(device), texts=texts, parts=parts)
    draw.update(mask=b["mask"].to(device), r=b["r"], env_mask=b["env_mask"].to(device))
    draw.update(behav_logp=b["behav_logp"].to(device), version=b["version"])
    return draw


def serve_rollouts():
    """A rollout worker's whole run (utils/async_rl.py): for each step it owns, wait for the weights of the
    version the step needs, sample and score the batch, send it to the learner (rank 0)."""
    version = start_step  # the weights every rank loaded (the SFT policy, or the --resume checkpoint)
    names = [name for name, _, _ in reward_funcs]
    for step in range(start_step + 1, args.steps + 1):
        if async_rl.owner(step, start_step, K) != rank:
            continue
        wanted = async_rl.need(step, start_step, args.max_staleness)
        if version < wanted:  # pacing: wait for the learner's weights of that version
            version = async_rl.recv_weights(policy, 0)
            if version != wanted:
                raise RuntimeError(
                    f"rank {rank} received the weights of version {version} for step {step}, not {wanted}"
                )
        prompts, u = step_prompts(step_generator(step))
        try:
            draw = sample_draw(prompts, u)
        except TaskError as e:  # reported by the learner, with the prompt the tool was called on
            async_rl.send_error(step, f"--task {args.task}: {e}", 0)
            return 2
        parts = torch.tensor([draw["parts"][n] for n in names]).T.reshape(len(draw["texts"]), len(names))  # (n*G, R)
        async_rl.send_batch({**draw, "step": step, "version": version, "parts": parts}, 0)
    return 0


def logprobs(model, seq, n_prompt, pmask):
    """Training-time log-probs of the completions (n, T) and what their entropy is read from: the logits
    (n, T, V), or with --logits-chunk-size the per-token entropy (n, T) (the chunked head holds no logits)."""
    if args.logits_chunk_size is None:
        return completion_logprobs(model, seq, n_prompt, args.temperature, pmask)
    chunk, bonus = args.logits_chunk_size, args.entropy_coef != 0  # the entropy needs a gradient only for the bonus
    return completion_logprobs_chunked(model, seq, n_prompt, args.temperature, pmask, chunk, entropy_grad=bonus)


def combine(means, counts):
    """The mean over the whole batch from each micro-batch's masked mean over its counts (exact for one)."""
    return sum(float(m) * float(n) for m, n in zip(means, counts, strict=True)) / max(sum(map(float, counts)), 1.0)


def pad_prompts(seqs, pmasks):
    """Rows of draws whose prompts were padded to different lengths, left-padded to a common one."""
    P = max(m.size(1) for m in pmasks)
    seqs = [
        torch.cat([s.new_full((s.size(0), P - m.size(1)), tok.pad_id), s], 1) for s, m in zip(seqs, pmasks, strict=True)
    ]
    return seqs, [torch.cat([m.new_zeros((m.size(0), P - m.size(1))), m], 1) for m in pmasks]


if worker:  # a rollout worker samples the learner's batches, then leaves (utils/async_rl.py)
    code = serve_rollouts()
    if code:  # the learner reports the failure and stops; torchrun then ends this process
        dist.barrier()
    compute_cleanup(True)
    sys.exit(code)
pending = []  # the learner's weight messages still in flight (async)

# -----------------------------------------------------------------------------
# training loop

pbar = tqdm(
    range(start_step + 1, args.steps + 1), disable=not master or args.no_progress, desc="grpo", dynamic_ncols=True
)
t_start = time.time() - elapsed
for step in pbar:
    t_step = time.time()
    # --- rollout: every rank draws the global batch's random numbers and takes its slice
    g = step_generator(step)
    draws = []  # (draw, indices of its groups we train on)
    for _attempt in range(1 + (args.max_resample if args.dynamic_sampling else 0)):
        prompts, u = step_prompts(g)
        if K:  # async: the batch a worker sampled for this step (utils/async_rl.py)
            t_wait = time.time()
            draw = receive_draw(step, prompts)
            wait_s = time.time() - t_wait
        else:
            try:
                draw = sample_draw(prompts, u)
            except TaskError as e:  # a bad prompt, or a tool that failed: before this step's update
                fail(f"--task {args.task}: {e}")
        add_calls(draw)
        keep = list(range(B))
        if args.dynamic_sampling:  # DAPO: a group whose rewards are all equal has advantage 0, drop it
            keep = (draw["r"].view(B, G).std(dim=1) > 0).nonzero().flatten().tolist()
        draws.append((draw, keep))
        if sum(len(k) for _, k in draws) >= B:
            break
    first = draws[0][0]  # the first, unfiltered draw: its rewards are the honest on-policy figures
    # no informative group in any draw: train on the first draw (advantages 0, the KL term alone)
    rows = [(d, b) for d, keep in draws for b in keep][:B] or [(first, b) for b in range(B)]
    picked = {k: [d[k][b * G : (b + 1) * G] for d, b in rows] for k in ("seq", "pmask", "mask", "r", "behav_logp")}
    seq, pmask = (torch.cat(x) for x in pad_prompts(picked["seq"], picked["pmask"]))  # (n*G, P+T), (n*G, P)
    mask, r = torch.cat(picked["mask"]), torch.cat(picked["r"])
    behav = torch.cat(picked["behav_logp"])  # (n*G, T) log mu: the sampler's log-probs, stored at sampling time
    P = pmask.size(1)
    loss_mask = mask  # (n*G, T) the tokens the loss sees
    if args.mask_truncated:  # DAPO overlong filtering: a completion that never ended leaves the loss
        loss_mask = mask * ~truncated(seq[:, P:], tok.eos_id)[:, None]
    # --- the rollouts file: per-token numbers of a few groups under pi_old, before the update (view.py)
    shown, n_show = None, min(args.rollout_groups, len(rows)) * G
    if master and n_show and (step == 1 or step % args.eval_every == 0 or step == args.steps):
        shown = token_stats(
            policy, ref if args.beta != 0 else None, seq[:n_show], P, pmask[:n_show], args.temperature, ctx
        )
    # --- advantages, on the global batch of rewards so that "batch" scale sees every rank's rewards
    r_global, offset = gather(r)  # (B_global*G,) the rewards trained on, every rank's
    adv = group_advantages(r_global, G, scale=args.scale)[offset : offset + r.numel()].to(device)  # (n*G,)
    # --- reference and old log-probs (no grad), in micro-batches of --micro-batch-size completions
    M = args.micro_batch_size or seq.size(0)
    micro = [slice(i, i + M) for i in range(0, seq.size(0), M)]  # the last one may be smaller
    with torch.no_grad(), ctx:
        ref_logp = None  # beta = 0: no KL term, so no reference forward (as TRL)
        if args.beta != 0:
            ref_logp = torch.cat([logprobs(ref, seq[m], P, pmask[m])[0] for m in micro]).float()  # (n*G, T)
        old_logp = None
        if args.num_iterations > 1:  # pi_old: the sampling policy, before any of the mu updates
            old_logp = torch.cat([logprobs(policy, seq[m], P, pmask[m])[0] for m in micro])
    # every normaliser is counted over the whole batch before the first micro-batch: grpo_loss turns each
    # micro-batch's loss into its share of the batch's (grpo.batch_share)
    rank_tokens, num_tokens = loss_mask.sum(), loss_mask.sum()  # real tokens: this rank's, all ranks'
    if ddp:
        dist.all_reduce(num_tokens)  # the global count: dapo's and cispo's normaliser, and the entropy bonus's
    # --- mu updates on the same rollout
    lr = lr_at(step, args.steps, args.lr, args.warmup_frac, args.lr_schedule)
    for pg in optimizer.param_groups:
        pg["lr"] = lr
    losses, norms, last_stats, entropy, bad, off_stats = [], [], {}, float("nan"), False, []
    if args.num_iterations > 1:  # a NaN in update 2+ undoes the step's earlier updates too
        saved = copy.deepcopy((policy.state_dict(), optimizer.state_dict()))
    for it in range(args.num_iterations):
        optimizer.zero_grad(set_to_none=True)
        loss, logps, micro_stats, entropies = None, [], [], []
        for k, m in enumerate(micro):  # gradients add up over the micro-batches; DDP all-reduces after the last
            lm = loss_mask[m]  # (M, T)
            with train_model.no_sync() if ddp and k < len(micro) - 1 else nullcontext():
                with ctx:  # through the DDP wrapper, so that backward all-reduces the gradients
                    logp, out = logprobs(train_model, seq[m], P, pmask[m])  # (M, T), logits (M, T, V) or H (M, T)
                H = out if args.logits_chunk_size else None  # (M, T) the chunked head's entropy (grad: bonus)
                if it == 0:
                    H_col = token_entropy_pieces(out) if H is None else H.detach()  # (M, T), every real token
                    entropies.append(((H_col * mask[m]).sum() / mask[m].sum().clamp(min=1)).item())
                if H is None and (args.entropy_coef != 0 or args.top_entropy_quantile < 1):
                    H = token_entropy(out)  # (M, T) per-token entropy with gradient: the bonus and the top-entropy mask
                out = None  # the logits live on only in the graph, which frees them once the backward has used them
                old = logp.detach() if old_logp is None else old_logp[m]  # pi_prox: the weights the step began with
                is_w, off = None, {}
                if off_policy:  # samples of mu, possibly older than pi_prox (grpo.py, off-policy samples)
                    off["behav_kl"] = ((behav[m] - old) * lm).sum() / lm.sum().clamp(min=1)  # k1 of KL(mu || pi_prox)
                    if args.off_policy != "none":  # ratio against pi_prox, the sample reweighted by pi_prox / mu
                        is_w, is_stats = off_policy_weight(old, behav[m], lm, args.off_policy, args.is_cap)
                        off.update(is_stats)
                    else:  # uncorrected: the ratio against the behaviour policy itself
                        old = behav[m]
                if it == 0 and off:
                    off_stats.append(off)
                loss_m, stats = grpo_loss(
                    logp,
                    old,
                    None if ref_logp is None else ref_logp[m],
                    adv[m],
                    lm,
                    clip_eps=args.clip_eps,
                    clip_eps_high=args.clip_eps_high,
                    beta=args.beta,
                    loss_type=args.loss_type,
                    max_completion_len=T,
                    num_completions=seq.size(0),  # the whole batch's counts: loss_m is this micro-batch's share
                    rank_tokens=rank_tokens,
                    num_tokens=num_tokens,
                    world_size=world,
                    importance_level=args.importance_level,
                    cispo_eps_max=args.cispo_eps_max,
                    delta=args.delta,
                    entropy=H,
                    top_entropy_quantile=args.top_entropy_quantile,
                    entropy_coef=args.entropy_coef,
                    is_weight=is_w,
                )
                if step in args.debug_nan_steps and it == args.debug_nan_update:
                    loss_m = loss_m * float("nan")  # fault injection (tests only)
                loss_m.backward()
            loss = loss_m.detach() if loss is None else loss + loss_m.detach()
            logps.append(logp.detach())
            micro_stats.append(stats)
            del logp, out, H, loss_m  # the next micro-batch's forward must not meet this one's logits
        counts = [loss_mask[m].sum() for m in micro]  # every stat is a masked mean over the tokens trained on
        stats = {key: torch.tensor(combine([s[key] for s in micro_stats], counts)) for key in micro_stats[0]}
        if it == 0:
            entropy = combine(entropies, [mask[m].sum() for m in micro])
        logp = torch.cat(logps)  # (n*G, T)
        trace_update(step, it, logp, logp if old_logp is None else old_logp, mask, stats)
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), args.grad_clip)
        step_bad = not (is_finite(loss) and is_finite(grad_norm))
        if ddp:  # every rank must agree to skip, or DDP ranks drift apart
            flag = torch.tensor(float(step_bad), device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            step_bad = bool(flag.item())
        if step_bad:  # skip the whole step: parameters and Adam state as they were before it
            optimizer.zero_grad(set_to_none=True)
            if it > 0:
                policy.load_state_dict(saved[0])
                optimizer.load_state_dict(saved[1])
            losses, norms, last_stats, bad = [], [], {}, True
            break
        optimizer.step()
        losses.append(loss.item())
        norms.append(grad_norm.item())
        last_stats = stats
    bad_streak = bad_streak + 1 if bad else 0
    if K and step + 1 + args.max_staleness <= args.steps:  # version `step` to the worker of step + 1 + S, at once
        pending = [w for w in pending if not w.is_completed()]
        dst = async_rl.owner(step + 1 + args.max_staleness, start_step, K)
        pending += async_rl.send_weights(policy, step, dst)
    # --- logging
    # every column over the global batch (all ranks), as utils/metrics.py defines it: rewards and lengths
    # of the first draw, token means of the batch trained on, tokens/s of everything sampled
    dt = time.time() - t_step
    r0, _ = gather(first["r"])  # (B_global*G,)
    n_trained = float(loss_mask.sum())  # real tokens the loss saw (this rank): --mask-truncated drops some
    row = {
        "step": step,
        "mean_r": r0.mean().item(),
        "std_r": r0.std().item(),
        "frac_zero_std": (r0.view(-1, G).std(dim=1) == 0).float().mean().item(),
        "kl": token_mean(last_stats["kl"], n_trained) if "kl" in last_stats else "",  # none at beta 0
        "entropy": token_mean(entropy, float(mask.sum())),  # over every real token, truncated completions too
        "clip_frac": token_mean(last_stats["clip_frac"], n_trained) if last_stats else "",
        "loss": all_mean(sum(losses) / len(losses)) if losses else "",
        "grad_norm": sum(norms) / len(norms) if norms else "",  # of the all-reduced gradient: the same on every rank
        "lr": lr,
        "len_mean": gather(first["mask"].sum(1))[0].mean().item(),
        "time_s": time.time() - t_start,
        "tokens_per_s": all_sum(sum(float(d["mask"].sum()) for d, _ in draws)) / dt,
        "skipped": int(bad),
        "kept_groups": int((r_global.view(-1, G).std(dim=1) > 0).sum()),  # informative groups trained on
    }
    if K:
        row["policy_lag"] = step - 1 - first["version"]  # learner steps between the sampling policy and this one
        row["wait_s"] = wait_s
    if off_stats:  # token means over the batch trained on, before the step's first update
        counts = [loss_mask[m].sum() for m in micro]
        row.update({key: combine([float(o[key]) for o in off_stats], counts) for key in off_stats[0]})
    for name in reward_names:
        row[f"r_{name}"] = gather(first["parts"][name])[0].mean().item()
    if tool is not None:
        row["tool_frac"] = gather(first["calls"] > 0)[0].mean().item()
        row["tool_calls"] = gather(first["calls"])[0].mean().item()
        n_env = all_sum(float(first["env_mask"].sum()))
        row["env_frac"] = n_env / max(n_env + all_sum(float(first["mask"].sum())), 1.0)
    if gold_fn is not None:
        gold = gold_fn([p for p in first["prompts"] for _ in range(G)], first["texts"])
        row["gold_r"] = gather(gold)[0].mean().item()
    if step_metrics:  # on the first draw, over every rank's completions
        prompts_all_ranks, texts_all_ranks = gather_texts(
            [p for p in first["prompts"] for _ in range(G)], first["texts"]
        )
        row.update(step_metrics(prompts_all_ranks, texts_all_ranks))
    if trace is not None:
        trace.append({"step": step, "r_first": r0, "r_trained": r_global, "kept_groups": row["kept_groups"]})
        if K:  # what the lag test recomputes: the batch, mu's log-probs, its version, the weights after the step
            trace[-1].update(seq=seq, pmask=pmask, mask=loss_mask, behav_logp=behav, version=first["version"])
            trace[-1]["weights"] = async_rl.flat_params(policy)
        torch.save(trace, args.debug_trace)
    if master and (step % args.eval_every == 0 or step == args.steps):
        row.update(evaluate(policy))
        comps = first["texts"]
        write_samples(samples_path, step, [p for p in first["prompts"] for _ in range(G)], comps, first["r"].tolist())
    if shown is not None:  # the first groups trained on, with the numbers the step's update started from
        shown_rows, cut = rows[: n_show // G], lambda x, b: x[b * G : (b + 1) * G]  # group b of a draw
        groups = [(d["prompts"][b], cut(d["texts"], b)) for d, b in shown_rows]
        parts = {n: [v for d, b in shown_rows for v in cut(d["parts"][n], b)] for n in reward_names}
        env = torch.cat([cut(d["env_mask"], b) for d, b in shown_rows]) if "env_mask" in first else None  # tools
        record = rollout_record(
            step, "grpo", tok, groups, seq[:n_show], P, mask[:n_show] + env, r[:n_show], parts, adv[:n_show], shown,
            env_mask=env, uses_eos=task.uses_eos,
        )  # fmt: skip
        append_rollouts(rollouts_file, {**record, **run_config(args)})
        if wandb:
            wandb.log({"rollouts": wandb_rollout_table(wandb, record)}, step=step)
    if master:
        logger.log(row)
        if wandb:
            wandb.log({k: v for k, v in row.items() if v != ""}, step=step)
        # the console rounds to 3 significant digits (the loss to 4); the CSV keeps every digit
        short = {k: console(row[k]) for k in ("mean_r", "kl", "entropy") if isinstance(row[k], float)}
        if isinstance(row["loss"], float):
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
    if master and not bad and (step % args.ckpt_every == 0 or step == args.steps):
        if not all(is_finite(p) for p in policy.parameters()):
            fail(f"non-finite parameters at step {step}; not writing a checkpoint", code=1)
        ck = {
            "policy": policy.state_dict(),
            "optimizer": optimizer.state_dict(),
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

if master:
    final_eval = evaluate(policy)
    summary = {
        "task": task.name,
        "steps": args.steps,
        "sft": sft_info,
        "sft_eval": sft_eval,
        "final_eval": final_eval,
        "grpo_time_s": round(time.time() - t_start, 1),
        "device": device,
        "world_size": world,
        "samples_seen": (args.steps - start_step) * args.batch_size * G,  # this invocation's sampled completions
        "memory": memory_stats(device, [policy], [ref], [optimizer]),
    }
    with open(os.path.join(args.out_dir, "grpo_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    if wandb:
        wandb.finish()
    print(
        f"held-out {task.name}: SFT {console(sft_eval)} -> GRPO {console(final_eval)} in {summary['grpo_time_s']}s; "
        f"log {args.log}"
    )
for w in pending:  # every weight message delivered before the process group goes
    w.wait()
train_model = None  # the DDP wrapper holds the process group: let compute_cleanup free it
compute_cleanup(ddp or K is not None)

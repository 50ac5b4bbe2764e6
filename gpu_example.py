"""
gpu_example.py: GRPO on a GPU with a GPT up to GPT-2-small's shape, timed by phase, with MFU and memory.

A GPT of up to 12 layers x 768 wide at batch sizes that use the GPU, every phase of a step timed, the
throughput reported as tokens/s, MFU and peak memory.

    python gpu_example.py                                   # CUDA: GPT-2-small shape, arithmetic
    python gpu_example.py --compile                         # torch.compile the training forward
    python gpu_example.py --task shakespeare --batch-size 64  # 64-token sequences
    python gpu_example.py --device cpu                      # tiny model, seconds (what the tests run)

What happens: a short SFT warm start of a fresh GPT on the task (utils/sft.py, so that the rewards are
not all zero; --sft-steps 0 skips it), a frozen copy of it as the reference pi_ref, then --steps GRPO
steps as train_grpo.py takes them (grpo.py's group advantages, clipped loss with the k3 KL
penalty, real rewards from tasks/, log-probs from model.completion_logprobs). On CUDA: bf16
autocast, TF32 matmuls, fused AdamW, optional torch.compile; --device cuda on a machine without CUDA
falls back to the CPU with a one-line message. No checkpoints or CSV: this script is about speed.

Timing: each step is split into contiguous phases, rollout (KV-cache sampling), reward (decode, score,
advantages), log-probs (reference, and old with mu > 1) and update (forward, backward, clip, AdamW);
on CUDA with CUDA events read after one synchronise per step, on CPU with time.perf_counter. The first
--warmup steps (CUDA context, cuDNN/cuBLAS heuristics, torch.compile) are not counted in the summary.
MFU (nanoGPT's: model.GPT.flops_per_token, 6N + 12*L*H*Q*T per token for forward + backward, a third of
it for a forward) is over the bf16 peak of the GPU (bench.PEAK_FLOPS: H100, H200, A100); not on CPU.
Peak memory: torch.cuda.max_memory_allocated over the GRPO steps; on CPU the process's peak RSS.
"""

import argparse
import copy
import resource
from collections import defaultdict
from contextlib import nullcontext

import torch

from bench import PhaseTimer, peak_flops
from grpo import completion_mask, entropy_from_logits, group_advantages, grpo_loss
from model import CharTokenizer, GPTConfig, completion_logprobs
from tasks import TASKS, total_reward
from utils.common import HelpFormatter, at_least, pick_device, positive
from utils.sft import sft_train

# n_layer, n_head, n_embd; "gpt2" is GPT-2 small's shape (85M parameters without GPT-2's 50257-token
# embedding: our vocabulary is the task's characters)
SIZES = {"tiny": (2, 2, 64), "small": (4, 4, 128), "medium": (6, 6, 384), "gpt2": (12, 12, 768)}

# -----------------------------------------------------------------------------
# config

parser = argparse.ArgumentParser(description=__doc__.split("\n")[1], formatter_class=HelpFormatter)
parser.add_argument(
    "--device",
    choices=["auto", "cuda", "cpu"],
    default="auto",
    help="cuda without a GPU falls back to cpu, with a message",
)
parser.add_argument("--model-size", choices=list(SIZES), default=None, help="default: gpt2 on CUDA, tiny on CPU")
parser.add_argument(
    "--task",
    choices=sorted(TASKS),
    default="arithmetic",
    help="tasks/: arithmetic (verifiable rewards, 11-token sequences) or shakespeare (64 tokens, sparse rewards)",
)
parser.add_argument("--steps", type=at_least(1), default=None, help="GRPO steps (default: 30 on CUDA, 4 on CPU)")
parser.add_argument("--warmup", type=at_least(0), default=2, help="first steps left out of the throughput summary")
parser.add_argument(
    "--batch-size", type=at_least(1), default=None, help="prompts per step B (default: 256 CUDA, 4 CPU)"
)
parser.add_argument(
    "--group-size", type=at_least(2), default=None, help="completions per prompt G (default: 8 CUDA, 4 CPU)"
)
parser.add_argument("--num-iterations", type=at_least(1), default=1, help="updates per rollout (mu)")
parser.add_argument("--lr", type=positive(), default=5e-5, help="GRPO learning rate (AdamW, no weight decay)")
parser.add_argument("--beta", type=float, default=0.04, help="weight of the k3 KL penalty to pi_ref")
parser.add_argument("--temperature", type=positive(), default=1.0, help="sampling temperature")
parser.add_argument(
    "--sft-steps", type=at_least(0), default=None, help="SFT warm-start steps (default: 300 CUDA, 50 CPU)"
)
parser.add_argument("--sft-batch-size", type=at_least(1), default=64, help="sequences per SFT step")
parser.add_argument("--sft-lr", type=positive(), default=3e-4, help="SFT learning rate (AdamW)")
parser.add_argument("--sft-target-acc", type=float, default=0.4, help="arithmetic: stop SFT at this train accuracy")
parser.add_argument("--compile", action="store_true", help="torch.compile the policy's training forward")
parser.add_argument("--seed", type=int, default=1337, help="random seed")
args = parser.parse_args()

# --- device and dtype, decided once
device = pick_device(args.device, fallback=True)
cuda = device == "cuda"
ctx = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if cuda else nullcontext()
if cuda:
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls outside autocast (SFT) use TF32
    torch.backends.cudnn.allow_tf32 = True
# defaults that fill a GPU, or finish in seconds on a CPU
args.model_size = args.model_size or ("gpt2" if cuda else "tiny")
args.steps = args.steps if args.steps is not None else (30 if cuda else 4)
args.sft_steps = args.sft_steps if args.sft_steps is not None else (300 if cuda else 50)
B = args.batch_size or (256 if cuda else 4)
G = args.group_size or (8 if cuda else 4)
if args.steps <= args.warmup:
    parser.error(f"--steps {args.steps} must be more than --warmup {args.warmup} (warm-up steps are not timed)")
torch.manual_seed(args.seed)

# -----------------------------------------------------------------------------
# data and models

task = TASKS[args.task]()
tok = CharTokenizer(task.chars)
eos_id = tok.eos_id if task.uses_eos else None
P, T = task.prompt_len, task.max_new_tokens
n_layer, n_head, n_embd = SIZES[args.model_size]
cfg = GPTConfig(block_size=task.block_size, vocab_size=tok.vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
print(f"device {device}, {args.model_size} GPT ({n_layer} x {n_embd}), {args.task}, B {B} x G {G} x T {T}")
policy, sft_info = sft_train(task, tok, cfg, args, device)  # warm start: a fresh GPT trained on the task
ref = copy.deepcopy(policy).eval().requires_grad_(False)  # pi_ref: the SFT policy, frozen
# fused AdamW: one kernel for the whole update instead of one per parameter tensor (CUDA only)
optimizer = torch.optim.AdamW(policy.parameters(), lr=args.lr, weight_decay=0.0, fused=cuda)
train_model = torch.compile(policy) if args.compile else policy
print(f"{policy.num_params() / 1e6:.2f}M params; SFT {sft_info}")
eval_before = task.evaluate(policy, tok, device)
peak = peak_flops(device)
N = B * G
L = P + T - 1  # positions a training forward runs over
flops_fwd = policy.flops_per_token(L) / 3  # per position, a forward (a third of forward + backward)

# -----------------------------------------------------------------------------
# GRPO steps

if cuda:
    torch.cuda.reset_peak_memory_stats()  # peak memory of the GRPO steps, not of SFT
timer = PhaseTimer(device)
total = defaultdict(float)  # summed over the timed steps (after --warmup)
for step in range(1, args.steps + 1):
    g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)  # all of this step's randomness
    prompts = [p for p in task.sample_prompts(g, B) for _ in range(G)]  # (N,) each prompt G times
    u = torch.rand(N, T, generator=g)  # (N, T) random numbers that drive the sampling
    # --- rollout: KV-cache sampling
    with timer("rollout"), ctx:
        idx = torch.tensor([tok.encode(p) for p in prompts], device=device)  # (N, P)
        out, _ = policy.generate(idx, T, temperature=args.temperature, eos_id=eos_id, uniforms=u)  # (N, T)
    # --- reward and advantages (on the CPU: decoding and the reward functions are Python)
    with timer("reward"):
        mask = completion_mask(out, eos_id) if eos_id is not None else torch.ones_like(out, dtype=torch.float)
        decode = tok.decode_completion if eos_id is not None else tok.decode
        texts = [decode(r) for r in out.tolist()]  # .tolist() syncs with the GPU
        r = torch.tensor(total_reward(task.reward_funcs, prompts, texts)[0])  # (N,)
        adv = group_advantages(r, G).to(device)  # (N,)
        seq = torch.cat([idx, out], dim=1)  # (N, P+T)
    # --- reference and old log-probs, no grad
    with timer("log-probs"), torch.no_grad(), ctx:
        ref_logp = completion_logprobs(ref, seq, P, args.temperature)[0].float()  # (N, T)
        old_logp = None
        if args.num_iterations > 1:  # pi_old: the policy that sampled, before any of the mu updates
            old_logp = completion_logprobs(policy, seq, P, args.temperature)[0].float()
    # --- mu updates: forward, loss, backward, clip, AdamW
    with timer("update"):
        for it in range(args.num_iterations):
            with ctx:
                logp, logits = completion_logprobs(train_model, seq, P, args.temperature)  # (N, T), (N, T, V)
            if it == 0:
                entropy = entropy_from_logits(logits.detach(), mask)
            old = logp.detach() if old_logp is None else old_logp
            loss, stats = grpo_loss(logp, old, ref_logp, adv, mask, beta=args.beta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
    phases = timer.read()  # the one synchronise of the step
    # --- throughput of this step
    step_s = sum(phases.values())
    tokens = mask.sum().item()  # real completion tokens sampled
    rollout_pos = P + int((mask.sum(0) > 0).sum()) - 1  # positions generate() computed: it stops when all rows end
    flops_update = args.num_iterations * policy.flops_per_token(L) * N * L
    flops = flops_update + flops_fwd * N * (rollout_pos + L * (1 + (old_logp is not None)))
    line = (
        f"step {step}/{args.steps} | r {r.mean():.3f} kl {stats['kl'].item():.3g} entropy {entropy.item():.3f} "
        f"|grad| {grad_norm.item():.3f} | " + " ".join(f"{k} {v:.3f}s" for k, v in phases.items())
    )
    line += f" | {tokens / step_s:,.0f} sampled tok/s"
    if peak:
        line += f" | MFU {flops / step_s / peak:.1%} (update {flops_update / phases['update'] / peak:.1%})"
    print(line + (" (warm-up, not counted)" if step <= args.warmup else ""), flush=True)
    if step > args.warmup:
        for k, v in phases.items():
            total[k] += v
        total["step"] += step_s
        total["tokens"] += tokens
        total["flops"] += flops
        total["flops_update"] += flops_update

# -----------------------------------------------------------------------------
# summary

n = args.steps - args.warmup
print(f"--- {n} timed steps after {args.warmup} warm-up, {args.model_size} GPT, B {B} x G {G} x T {T}, {device}")
print(
    "mean seconds per step: "
    + ", ".join(f"{k} {total[k] / n:.3f}" for k in phases)
    + f", total {total['step'] / n:.3f}"
)
print(
    f"throughput: {total['tokens'] / total['step']:,.0f} sampled completion tokens/s, {N * n / total['step']:,.1f} "
    f"completions/s; update: {args.num_iterations * total['tokens'] / total['update']:,.0f} real completion tokens/s "
    f"trained, {args.num_iterations * N * L * n / total['update']:,.0f} sequence positions/s through forward+backward "
    "(prompt and padding after the end token included: the positions the FLOP count covers)"
)
if peak:
    print(
        f"MFU ({torch.cuda.get_device_name()}, bf16 peak {peak / 1e12:.0f} TFLOP/s): step "
        f"{total['flops'] / total['step'] / peak:.1%}, update {total['flops_update'] / total['update'] / peak:.1%}"
    )
elif cuda:
    print(f"MFU: {torch.cuda.get_device_name()} is not in bench.PEAK_FLOPS")
if cuda:
    print(
        f"peak memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated (torch.cuda.max_memory_allocated)"
    )
else:
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB peak RSS of the process")
print(f"held-out {args.task}: before GRPO {eval_before}, after {task.evaluate(policy, tok, device)}")

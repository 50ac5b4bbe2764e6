"""
bench.py: how fast nanoGRPO runs on this machine, and how much memory GRPO saves over PPO.

    python bench.py                       # the full CPU table, a few minutes on 2 cores
    python bench.py --device cuda         # the GPU table (bf16 autocast, TF32), adds MFU
    python bench.py --quick               # seconds, tiny shapes: checks the script runs (tests)
    python bench.py --n-layer 6 --n-embd 384 --n-head 6 --out bench.md

Prints markdown tables (and writes them to --out):
  1. Generation: completion tokens/s of model.generate with the KV cache (use_cache=True) and with
     full recompute of the whole prefix at every token (use_cache=False), at 64, 128 and 256 new
     tokens: the same untrained model, prompts (32-character tiny-Shakespeare windows), random numbers
     and seed, no end token so every row runs the full length. "same tokens" checks that the two paths
     sampled the same completions.
  2. GRPO steps: one full step, mu = 1, beta = 0.04 (rollout with the KV cache, reward, reference
     log-probs, update), split by phase, on the model of the shape flags and at two fixed shapes
     (4 layers x 128 wide, 8 prompts x G 8 x 32 new tokens; 6 x 384, 8 x 8 x 64). Seconds per step,
     completions/s, and the step's FLOPs over the FLOP/s of a large fp32 matmul measured in the same
     run (how close to what this machine's matmul can do we are). On CUDA also MFU against the bf16
     peak of the GPU.
  3. Memory of one GRPO step and one PPO step (policy + reference + value model, ppo.py's GAE and
     clipped loss) on the same model and batch, and their ratio. See `peak_memory` for exactly what
     is measured on each device.

Timing rules: a warm-up call is never counted; each figure is the best of --repeats calls (the least
disturbed by other processes); CUDA work is synchronised before every clock read, phases inside a step
are timed with CUDA events read after one synchronise at the end of the step.
FLOPs follow nanoGPT's MFU (PaLM appendix B): 6N + 12*L*H*Q*T per token for forward + backward (N
parameters without the position embedding), a third of that for a forward only.
"""

import argparse
import copy
import gc
import os
import shlex
import sys
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from functools import partial

import torch

from grpo import group_advantages, grpo_loss
from model import GPT, CharTokenizer, GPTConfig, ValueModel, completion_logprobs
from ppo import gae, masked_whiten, per_token_rewards, ppo_loss
from utils.common import at_least, pick_device
from utils.tasks import ShakespeareTask, total_reward

# bf16 dense peak FLOP/s (no sparsity) from NVIDIA's datasheets, matched against the device name
PEAK_FLOPS = [("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("A100", 312e12)]
FIXED_SHAPES = [(4, 128, 4, 8, 8, 32), (6, 384, 6, 8, 8, 64)]  # n_layer, n_embd, n_head, B, G, T (the issue's)
QUICK_SHAPES = [(1, 32, 2, 2, 2, 4), (2, 32, 2, 2, 2, 8)]

# -----------------------------------------------------------------------------
# timing and memory


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats):
    """Best wall time of `repeats` calls of fn() (the least disturbed), synchronising CUDA before each
    clock read. Returns (seconds, the last call's result)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


class PhaseTimer:
    """Seconds per named phase. CUDA: a pair of events around each phase, read after one synchronise
    (read()), so the step itself is never stalled; phases are contiguous, so they sum to the step.
    CPU: time.perf_counter."""

    def __init__(self, device):
        self.cuda, self.marks = device == "cuda", []

    @contextmanager
    def __call__(self, name):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
        else:
            start = time.perf_counter()
            yield
            end = time.perf_counter()
        self.marks.append((name, start, end))

    def read(self):
        if self.cuda:
            torch.cuda.synchronize()  # the events' times are known only once the GPU got there
        out = defaultdict(float)
        for name, start, end in self.marks:
            out[name] += start.elapsed_time(end) / 1000 if self.cuda else end - start
        self.marks = []
        return dict(out)


def peak_memory(fn, device):
    """Run fn(); return (its result, the peak bytes of live tensors above those alive before it).

    CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus memory_allocated before
      (the caching allocator's tensor bytes; reserved-but-free blocks are not counted).
    CPU: every allocation and free of PyTorch's CPU allocator during fn, recorded by torch.profiler
      (profile_memory=True) and summed in time order; the peak of that running sum. The same quantity
      as on CUDA, without the allocator rounding. (The process's peak RSS cannot be split per method,
      it only grows.)
    """
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        return out, torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    # kineto_results holds the raw allocator events ("[memory]", nbytes < 0 for a free) in time order
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return out, peak


def state_bytes(modules, optimizers):
    """Bytes of the parameters (tied weights once), gradients and optimizer state a method holds."""
    params = {p.data_ptr(): p for m in modules for p in m.parameters()}.values()
    n = sum(p.numel() * p.element_size() for p in params)
    n += sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    for opt in optimizers:
        n += sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
    return n


def matmul_flops(device, n, repeats):
    """FLOP/s of one large fp32 n x n matmul (TF32 on CUDA where enabled), best of `repeats`."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b  # warm-up
    dt, _ = timed(lambda: a @ b, device, repeats)
    return 2 * n**3 / dt


def peak_flops(device):
    """bf16 peak FLOP/s of the GPU from PEAK_FLOPS, None on CPU or an unknown GPU."""
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((f for key, f in PEAK_FLOPS if key in name), None)


def describe(device):
    if device == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}, bf16 autocast, TF32 matmuls"
    model = "unknown CPU"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    return (
        f"{model}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"torch.get_num_threads() = {torch.get_num_threads()}, fp32"
    )


# -----------------------------------------------------------------------------
# models, data and the two steps


class Batch:
    """B prompts (32-character tiny-Shakespeare windows) x G completions of T tokens, fixed by the seed."""

    def __init__(self, task, tok, B, G, T, seed, device):
        g = torch.Generator().manual_seed(seed)
        self.prompts = [p for p in task.sample_prompts(g, B) for _ in range(G)]  # (N,) each prompt G times
        self.idx = torch.tensor([tok.encode(p) for p in self.prompts], device=device)  # (N, P)
        self.u = torch.rand(B * G, T, generator=g)  # (N, T) the sampling's random numbers
        self.tok, self.G, self.T, self.P = tok, G, T, task.prompt_len
        self.rewards = task.reward_funcs


def make_models(cfg, device, seed, value=False):
    """policy, frozen reference (a copy) and, for PPO, a value model; one Adam over what trains."""
    torch.manual_seed(seed)
    policy = GPT(cfg).to(device)
    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    models = [policy, ref]
    trainable = list(policy.parameters())
    if value:
        models.append(ValueModel(GPT(cfg)).to(device))
        trainable += list(models[-1].parameters())
    opt = torch.optim.Adam(trainable, lr=3e-4, fused=device == "cuda")  # fused: one kernel for the update
    return models, opt


def rollout(policy, batch, ctx, timer):
    """Sample, score, and return (seq (N, P+T), scores (N,), mask (N, T)), timing the two phases."""
    with timer("rollout"), ctx:
        out, _ = policy.generate(batch.idx, batch.T, uniforms=batch.u)  # (N, T), no end token: full length
    with timer("reward"):
        texts = [batch.tok.decode(r) for r in out.tolist()]  # .tolist() syncs with the GPU
        scores = torch.tensor(total_reward(batch.rewards, batch.prompts, texts)[0], device=out.device)  # (N,)
        seq = torch.cat([batch.idx, out], dim=1)  # (N, P+T)
        mask = torch.ones_like(out, dtype=torch.float)  # (N, T) every token is real
    return seq, scores, mask


def grpo_step(models, opt, batch, ctx, timer, beta=0.04):
    """One GRPO step as train_grpo.py takes it with mu = 1: old log-probs are logp.detach()."""
    policy, ref = models
    seq, scores, mask = rollout(policy, batch, ctx, timer)
    with timer("reward"):
        adv = group_advantages(scores, batch.G)  # (N,)
    with timer("ref log-probs"), torch.no_grad(), ctx:
        ref_logp = completion_logprobs(ref, seq, batch.P)[0].float()  # (N, T)
    with timer("update"):
        with ctx:
            logp = completion_logprobs(policy, seq, batch.P)[0]  # (N, T) with grad
        loss, _ = grpo_loss(logp, logp.detach(), ref_logp, adv, mask, beta=beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()


def ppo_step(models, opt, batch, ctx, timer, kl_coef=0.04):
    """One PPO step (ppo.py): old log-probs and values, reference log-probs, per-token rewards, GAE,
    one clipped update of policy and value model."""
    policy, ref, value = models
    seq, scores, mask = rollout(policy, batch, ctx, timer)
    with timer("old log-probs, values"), torch.no_grad(), ctx:
        old_logp = completion_logprobs(policy, seq, batch.P)[0].float()  # (N, T)
        old_values = value(seq, batch.P)  # (N, T)
    with timer("ref log-probs"), torch.no_grad(), ctx:
        ref_logp = completion_logprobs(ref, seq, batch.P)[0].float()  # (N, T)
    with timer("reward"):
        rewards, _ = per_token_rewards(scores, old_logp, ref_logp, mask, kl_coef=kl_coef)  # (N, T)
        adv, returns = gae(rewards, old_values, mask)  # (N, T) each
        adv = masked_whiten(adv, mask)
    with timer("update"):
        with ctx:
            logp = completion_logprobs(policy, seq, batch.P)[0]  # (N, T) with grad
            values = value(seq, batch.P)  # (N, T) with grad
        loss, _ = ppo_loss(logp, old_logp, values, old_values, adv, returns, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for m in (policy, value) for p in m.parameters()], 1.0)
        opt.step()


def step_flops(model, N, P, T):
    """(FLOPs of one GRPO step with mu = 1, FLOPs of its update). The update is a forward and backward
    over N sequences of P+T-1 positions; the rollout (the KV cache computes each position once) and the
    reference log-probs are one forward each over the same positions, a third of the update each."""
    L = P + T - 1
    update = model.flops_per_token(L) * N * L
    return update * 5 / 3, update


# -----------------------------------------------------------------------------
# the three benchmarks


def bench_generation(cfg, task, tok, lengths, n_prompts, args, device, ctx):
    torch.manual_seed(args.seed)
    model = GPT(cfg).to(device)
    idx = Batch(task, tok, n_prompts, 1, 1, args.seed, device).idx  # (n_prompts, P)
    with ctx:
        for use_cache in (True, False):  # warm-up, not counted
            model.generate(idx, 8, use_cache=use_cache)
    rows = []
    for T in lengths:
        u = torch.rand(n_prompts, T, generator=torch.Generator().manual_seed(args.seed))  # (n, T)
        dt, out = {}, {}
        for use_cache in (True, False):
            generate = partial(model.generate, idx, T, uniforms=u, use_cache=use_cache)
            with ctx:
                dt[use_cache], (out[use_cache], _) = timed(generate, device, args.repeats)
        same = torch.equal(out[True], out[False])
        rows.append((T, n_prompts * T / dt[True], n_prompts * T / dt[False], dt[False] / dt[True], same))
    return rows


def bench_grpo(shape, task, tok, args, device, ctx, matmul, peak):
    """Warm-up step, then the fastest of --repeats steps, by phase."""
    n_layer, n_embd, n_head, B, G, T = shape
    cfg = GPTConfig(
        block_size=task.prompt_len + T, vocab_size=tok.vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd
    )
    models, opt = make_models(cfg, device, args.seed)
    batch = Batch(task, tok, B, G, T, args.seed, device)
    timer = PhaseTimer(device)
    grpo_step(models, opt, batch, ctx, timer)  # warm-up: allocates Adam's state, not counted
    timer.read()
    best = None
    for _ in range(args.repeats):
        grpo_step(models, opt, batch, ctx, timer)
        phases = timer.read()
        if best is None or sum(phases.values()) < sum(best.values()):
            best = phases
    step_s = sum(best.values())
    flops, update_flops = step_flops(models[0], B * G, task.prompt_len, T)
    row = dict(shape=shape, params=models[0].num_params(), phases=best, step_s=step_s)
    row.update(completions_s=B * G / step_s, gflop=flops / 1e9, of_matmul=flops / step_s / matmul)
    if peak:
        row.update(mfu=flops / step_s / peak, update_mfu=update_flops / best["update"] / peak)
    return row


def bench_memory(shape, task, tok, args, device, ctx):
    """Peak memory over building the models and two steps (the second with Adam's state in place)."""
    n_layer, n_embd, n_head, B, G, T = shape
    cfg = GPTConfig(
        block_size=task.prompt_len + T, vocab_size=tok.vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd
    )
    batch = Batch(task, tok, B, G, T, args.seed, device)
    out = {}
    for name, step in (("GRPO", grpo_step), ("PPO", ppo_step)):

        def run(step=step, value=name == "PPO"):
            models, opt = make_models(cfg, device, args.seed, value=value)
            timer = PhaseTimer(device)
            for _ in range(2):
                step(models, opt, batch, ctx, timer)
            timer.read()
            return len(models), state_bytes(models, [opt])

        (n_models, state), peak = peak_memory(run, device)
        out[name] = dict(models=n_models, state=state, peak=peak)
    return out


# -----------------------------------------------------------------------------
# main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to run")
    parser.add_argument("--n-layer", type=at_least(1), default=4, help="transformer blocks of the bench model")
    parser.add_argument("--n-embd", type=at_least(1), default=128, help="width of the bench model")
    parser.add_argument("--n-head", type=at_least(1), default=4, help="attention heads of the bench model")
    parser.add_argument("--lengths", type=at_least(1), nargs="+", default=[64, 128, 256], help="generation lengths")
    parser.add_argument("--gen-prompts", type=at_least(1), default=16, help="prompts generated in parallel (batch)")
    parser.add_argument("--batch-size", type=at_least(1), default=8, help="bench model's GRPO/PPO step: prompts B")
    parser.add_argument("--group-size", type=at_least(2), default=8, help="bench model's GRPO/PPO step: group size G")
    parser.add_argument("--max-new-tokens", type=at_least(1), default=32, help="bench model's GRPO/PPO step: T")
    parser.add_argument("--repeats", type=at_least(1), default=2, help="timed calls per figure (the best is kept)")
    parser.add_argument("--matmul-n", type=at_least(1), default=None, help="size of the reference fp32 matmul")
    parser.add_argument("--seed", type=int, default=1337, help="random seed (models, prompts, sampling)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and lengths: seconds, for tests")
    parser.add_argument("--out", default=None, help="also write the tables to this markdown file")
    args = parser.parse_args()
    if args.n_embd % args.n_head:
        parser.error(f"--n-embd {args.n_embd} is not divisible by --n-head {args.n_head}")

    # --- device, decided once
    device = pick_device(args.device, fallback=True)
    ctx = nullcontext() if device == "cpu" else torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    shape = (args.n_layer, args.n_embd, args.n_head, args.batch_size, args.group_size, args.max_new_tokens)
    fixed = FIXED_SHAPES
    if args.quick:  # everything tiny; the figures are meaningless, the table's shape is what is tested
        shape, fixed, args.lengths, args.gen_prompts = QUICK_SHAPES[0], QUICK_SHAPES, [4, 8], 2
        args.matmul_n = args.matmul_n or 128
    matmul_n = args.matmul_n or (8192 if device == "cuda" else 2048)
    task = ShakespeareTask()
    tok = CharTokenizer(task.chars)
    peak = peak_flops(device)
    L, C, H = shape[:3]
    t_start = time.time()

    lines = [
        f"Device: {describe(device)}.",
        f"Command: `python bench.py {shlex.join(sys.argv[1:])}`"
        + (" (tiny shapes: not a benchmark)" if args.quick else ""),
        "",
    ]

    # --- 1. generation
    matmul = matmul_flops(device, matmul_n, max(args.repeats, 3))
    gen_cfg = GPTConfig(
        block_size=task.prompt_len + max(args.lengths), vocab_size=tok.vocab_size, n_layer=L, n_head=H, n_embd=C
    )
    gen = bench_generation(gen_cfg, task, tok, args.lengths, args.gen_prompts, args, device, ctx)
    lines += [
        f"Generation, {L} layers x {C} wide ({H} heads), {args.gen_prompts} prompts of {task.prompt_len} "
        f"tokens in parallel, no end token; completion tokens/s, best of {args.repeats}:",
        "",
        "| new tokens | KV cache (tok/s) | full recompute (tok/s) | KV-cache speedup | same tokens |",
        "|---:|---:|---:|---:|:---:|",
    ]
    lines += [f"| {T} | {a:,.0f} | {b:,.0f} | {r:.1f}x | {'yes' if s else 'no'} |" for T, a, b, r, s in gen]
    if device == "cuda":  # in fp32 on a CPU the two paths agree exactly (tests/test_model.py)
        lines += ["", "(bf16: the cached and the recomputed attention round differently, so tokens may differ)"]
    print("\n".join(lines), flush=True)

    # --- 2. GRPO steps by phase
    shapes = list(dict.fromkeys([shape, *fixed]))  # the bench model first, no duplicates
    rows = [bench_grpo(s, task, tok, args, device, ctx, matmul, peak) for s in shapes]
    mfu_head = " MFU step / update |" if peak else ""
    part = [
        "",
        f"One GRPO step (mu = 1, beta = 0.04), seconds by phase, best of {args.repeats} after a warm-up step; "
        f"prompts of {task.prompt_len} tokens; reference: a {matmul_n}x{matmul_n} fp32 matmul at "
        f"{matmul / 1e9:,.1f} GFLOP/s on this device:",
        "",
        "| model | B x G x T | params | rollout | reward | ref log-probs | update | step (s) | completions/s "
        f"| step GFLOP | step FLOP/s / matmul FLOP/s |{mfu_head}",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if peak else ""),
    ]
    for r in rows:
        nl, ne, nh, B, G, T = r["shape"]
        p = r["phases"]
        mfu = f" {r['mfu']:.1%} / {r['update_mfu']:.1%} |" if peak else ""
        part.append(
            f"| {nl} x {ne} ({nh} heads) | {B} x {G} x {T} | {r['params'] / 1e6:.2f}M | {p['rollout']:.3f} "
            f"| {p['reward']:.3f} | {p['ref log-probs']:.3f} | {p['update']:.3f} | {r['step_s']:.3f} "
            f"| {r['completions_s']:,.1f} | {r['gflop']:,.2f} | {r['of_matmul']:.1%} |{mfu}"
        )
    if device == "cuda" and not peak:
        part.append(f"\n(no MFU: {torch.cuda.get_device_name()} is not in the peak table)")
    print("\n".join(part), flush=True)
    lines += part

    # --- 3. memory, GRPO vs PPO
    mem = bench_memory(shape, task, tok, args, device, ctx)
    mib = 2**20
    what = (
        "torch.cuda.max_memory_allocated"
        if device == "cuda"
        else "the peak of PyTorch's CPU allocator live bytes, from torch.profiler(profile_memory=True) events"
    )
    part = [
        "",
        f"Memory, {L} x {C} model, {shape[3]} x {shape[4]} x {shape[5]}: peak live tensor bytes while building "
        f"the models and taking two steps ({what}), and the parameters + gradients + Adam state held:",
        "",
        "| method | models held | params + grads + Adam (MiB) | peak (MiB) |",
        "|---|---|---:|---:|",
    ]
    held = {"GRPO": "policy, reference", "PPO": "policy, reference, value"}
    for name, m in mem.items():
        part.append(f"| {name} | {held[name]} | {m['state'] / mib:.2f} | {m['peak'] / mib:.2f} |")
    g, p = mem["GRPO"], mem["PPO"]
    part.append(f"| GRPO / PPO | | {g['state'] / p['state']:.2f}x | {g['peak'] / p['peak']:.2f}x |")
    part += ["", f"bench.py took {time.time() - t_start:.0f} s."]
    print("\n".join(part), flush=True)
    lines += part
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

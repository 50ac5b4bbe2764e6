"""
bench.py: how fast nanoGRPO runs on this machine, and how much memory GRPO saves over PPO.

    python bench.py                       # the full CPU table, a few minutes on 2 cores
    python bench.py --device cuda         # the GPU table (bf16 autocast, TF32), adds MFU
    python bench.py --quick               # seconds, tiny shapes: checks the script runs (tests)
    python bench.py --n-layer 6 --n-embd 384 --n-head 6 --out bench.md
    python bench.py --baseline 4f39440 c82dd43   # adds columns: generate of model.py at those git revisions
    python bench.py --compile             # adds generate(compile=True) (torch.compile of the decode step)
    python bench.py --rss                 # adds the peak RSS of train_grpo.py at a 50,000-character vocabulary
    python bench.py --memory-only --rss   # the memory tables only (docs/memory.md's command)
    python bench.py --rss-only            # the peak-RSS runs only

Prints markdown tables (and writes them to --out):
  1. Generation: completion tokens/s of model.generate with the KV cache (use_cache=True) and with
     full recompute of the whole prefix at every token (use_cache=False), at 64, 128 and 256 new
     tokens: the same untrained model, prompts (32-character tiny-Shakespeare windows), random numbers
     and seed, no end token so every row runs the full length. "same tokens" checks that the two paths
     sampled the same completions. With --baseline REV [REV ...] also the KV-cache generate of model.py as of
     each git revision REV (its own module, the same weights), timed in the same run, interleaved call by call
     with the current one so that a disturbance from another process falls on both alike; with --compile
     also generate(compile=True), its compilation in a warm-up call that is not counted.
  2. GRPO steps: one full step, mu = 1, beta = 0.04 (rollout with the KV cache, reward, reference
     log-probs, update), split by phase, on the model of the shape flags and at two fixed shapes
     (4 layers x 128 wide, 8 prompts x G 8 x 32 new tokens; 6 x 384, 8 x 8 x 64). Seconds per step,
     completions/s, and the step's FLOPs over the FLOP/s of a large fp32 matmul measured in the same
     run (how close to what this machine's matmul can do we are). On CUDA also MFU against the bf16
     peak of the GPU. Then the rollout beside the update at the two fixed shapes: completion tokens/s
     and FLOP/s over the matmul's (the rollout is one forward over the same positions as the update, a
     third of its FLOPs), and the whole step; with --baseline / --compile the same steps with the
     baseline's or the compiled generate in the rollout, interleaved step by step with the current one.
  3. Memory of one GRPO step and one PPO step (policy + reference + value model, ppo.py's GAE and
     clipped loss) on the same model and batch, and their ratio. See `peak_memory` for exactly what
     is measured on each device.
  4. At a GPT-2 vocabulary (--vocab 50257, the shape flags' body, B x G x 128 tokens): the peak memory and
     the seconds of the reference log-probs + one update as today, with --micro-batch-size, with
     --logits-chunk-size and with both (train_grpo.py's flags, docs/memory.md); beside it the seconds of a
     whole GRPO step with each at the two fixed shapes (the price in time).
  5. With --rss: the peak RSS of two train_grpo.py steps from a random 4 x 128 nanoGPT-format checkpoint over
     50,000 characters, without and with --micro-batch-size 8, 2 and 1 (and --logits-chunk-size 256), how far
     the gradients moved, and the floor: the same process with a batch of 2 one-token completions.

Timing rules: a warm-up call is never counted; each figure is the best of --repeats calls (the least
disturbed by other processes); CUDA work is synchronised before every clock read, phases inside a step
are timed with CUDA events read after one synchronise at the end of the step.
FLOPs follow nanoGPT's MFU (PaLM appendix B): 6N + 12*L*H*Q*T per token for forward + backward (N
parameters without the position embedding), a third of that for a forward only.
"""

import argparse
import copy
import dataclasses
import gc
import importlib.util
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from functools import partial

import torch

from grpo import group_advantages, grpo_loss
from model import GPT, CharTokenizer, GPTConfig, ValueModel, completion_logprobs, completion_logprobs_chunked
from ppo import gae, masked_whiten, per_token_rewards, ppo_loss
from tasks import total_reward
from tasks.shakespeare import ShakespeareTask
from utils.common import HelpFormatter, at_least, pick_device

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
    best, out = timed_each({"fn": fn}, device, repeats)
    return best["fn"], out["fn"]


def timed_each(fns, device, repeats):
    """timed() for several functions (a dict name -> fn), their calls interleaved (a, b, a, b, ...) so
    that a disturbance from another process falls on all alike. Returns ({name: seconds}, {name: result})."""
    best, out = dict.fromkeys(fns, float("inf")), {}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            out[name] = fn()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
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


def load_baseline(rev):
    """model.py as of git revision rev, imported as a module of its own (`git show rev:model.py`)."""
    root = os.path.dirname(os.path.abspath(__file__))
    src = subprocess.run(["git", "show", f"{rev}:model.py"], cwd=root, capture_output=True, text=True, check=True)
    path = os.path.join(tempfile.mkdtemp(), "model_baseline.py")
    with open(path, "w") as f:
        f.write(src.stdout)
    spec = importlib.util.spec_from_file_location("model_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def baseline_model(base, model):
    """model as the baseline module's GPT, sharing model's parameter storage (load_state_dict(assign=True)):
    an optimizer step on model is seen by it too."""
    fields = {f.name for f in dataclasses.fields(base.GPTConfig)}
    old = base.GPT(base.GPTConfig(**{k: v for k, v in vars(model.config).items() if k in fields}))
    old.load_state_dict(model.state_dict(), assign=True)
    return old.to(model.lm_head.weight.device)


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


def shape_config(shape, task, tok):
    """The GPTConfig of a bench shape (n_layer, n_embd, n_head, B, G, T): prompts of the task's length + T tokens."""
    n_layer, n_embd, n_head, _, _, T = shape
    return GPTConfig(
        block_size=task.prompt_len + T, vocab_size=tok.vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd
    )


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


def rollout(policy, batch, ctx, timer, generate=None):
    """Sample (with generate, default policy.generate), score, and return (seq (N, P+T), scores (N,),
    mask (N, T)), timing the two phases."""
    generate = generate or policy.generate
    with timer("rollout"), ctx:
        out, _ = generate(batch.idx, batch.T, uniforms=batch.u)  # (N, T), no end token: full length
    with timer("reward"):
        texts = [batch.tok.decode(r) for r in out.tolist()]  # .tolist() syncs with the GPU
        scores = torch.tensor(total_reward(batch.rewards, batch.prompts, texts)[0], device=out.device)  # (N,)
        seq = torch.cat([batch.idx, out], dim=1)  # (N, P+T)
        mask = torch.ones_like(out, dtype=torch.float)  # (N, T) every token is real
    return seq, scores, mask


def grpo_step(models, opt, batch, ctx, timer, beta=0.04, generate=None, micro=None, chunk=None):
    """One GRPO step as train_grpo.py takes it with mu = 1: old log-probs are logp.detach()."""
    policy, ref = models
    seq, scores, mask = rollout(policy, batch, ctx, timer, generate)
    with timer("reward"):
        adv = group_advantages(scores, batch.G)  # (N,)
    grpo_update(models, opt, seq, batch.P, adv, mask, ctx, timer, beta, micro, chunk)


def grpo_update(models, opt, seq, P, adv, mask, ctx, timer, beta=0.04, micro=None, chunk=None):
    """The reference log-probs and one update (loss type grpo, mu = 1) as train_grpo.py takes them: in
    micro-batches of `micro` completions (--micro-batch-size: gradients accumulated, each micro-batch's loss
    weighted by its share of the N completions), the log-probs through the chunked head of `chunk` positions
    (--logits-chunk-size); None: the whole batch, the plain head."""
    policy, ref = models
    N = seq.size(0)
    parts = [slice(i, i + (micro or N)) for i in range(0, N, micro or N)]

    def logprobs(model, m):
        if chunk is None:
            return completion_logprobs(model, seq[m], P)[0]  # (M, T)
        return completion_logprobs_chunked(model, seq[m], P, chunk_size=chunk)[0]

    with timer("ref log-probs"), torch.no_grad(), ctx:
        ref_logp = torch.cat([logprobs(ref, m) for m in parts]).float()  # (N, T)
    with timer("update"):
        opt.zero_grad(set_to_none=True)
        for m in parts:
            with ctx:
                logp = logprobs(policy, m)  # (M, T) with grad
            # num_completions=N: the loss is the micro-batch's share of the N completions' mean (grpo.batch_share)
            loss, _ = grpo_loss(logp, logp.detach(), ref_logp[m], adv[m], mask[m], beta=beta, num_completions=N)
            loss.backward()
            del logp, loss  # the next micro-batch must not meet this one's graph
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


def generate_variants(model, args, base):
    """The generate functions to time, by column: the current KV cache, and with --baseline / --compile
    each baseline revision's (base: {rev: module}) and the compiled one."""
    variants = {"cache": partial(model.generate, use_cache=True)}
    for rev, module in (base or {}).items():
        variants[rev] = partial(baseline_model(module, model).generate, use_cache=True)
    if args.compile:
        variants["compiled"] = partial(model.generate, compile=True)
    return variants


def bench_generation(cfg, task, tok, lengths, n_prompts, args, device, ctx, base=None):
    """Completion tokens/s per generate variant and length, and whether every variant sampled the tokens
    full recompute did."""
    torch.manual_seed(args.seed)
    model = GPT(cfg).to(device)
    idx = Batch(task, tok, n_prompts, 1, 1, args.seed, device).idx  # (n_prompts, P)
    variants = generate_variants(model, args, base)
    variants["recompute"] = partial(model.generate, use_cache=False)
    with ctx:
        for gen in variants.values():  # warm-up, not counted
            gen(idx, 8)
    rows = []
    for T in lengths:
        u = torch.rand(n_prompts, T, generator=torch.Generator().manual_seed(args.seed))  # (n, T)
        fns = {name: partial(gen, idx, T, uniforms=u) for name, gen in variants.items()}
        with ctx:
            if "compiled" in fns:
                fns["compiled"]()  # a new cache size may compile again: not counted
            dt, out = timed_each(fns, device, args.repeats)
        tok_s = {name: n_prompts * T / s for name, s in dt.items()}
        same = all(torch.equal(o[0], out["recompute"][0]) for o in out.values())
        rows.append(dict(T=T, tok_s=tok_s, same=same))
    return rows


def bench_grpo(shape, task, tok, args, device, ctx, matmul, peak, base=None):
    """Warm-up step, then the fastest of --repeats steps, by phase, for each rollout variant (the current
    generate, and with --baseline / --compile the others), steps interleaved. Returns {variant: row}."""
    n_layer, n_embd, n_head, B, G, T = shape
    cfg = shape_config(shape, task, tok)
    models, opt = make_models(cfg, device, args.seed)
    batch = Batch(task, tok, B, G, T, args.seed, device)
    timer = PhaseTimer(device)
    variants = generate_variants(models[0], args, base)
    for gen in variants.values():  # warm-up: allocates Adam's state (and compiles), not counted
        grpo_step(models, opt, batch, ctx, timer, generate=gen)
        timer.read()
    best = dict.fromkeys(variants)
    for _ in range(args.repeats):
        for name, gen in variants.items():
            grpo_step(models, opt, batch, ctx, timer, generate=gen)
            phases = timer.read()
            if best[name] is None or sum(phases.values()) < sum(best[name].values()):
                best[name] = phases
    flops, update_flops = step_flops(models[0], B * G, task.prompt_len, T)
    rows = {}
    for name, phases in best.items():
        step_s = sum(phases.values())
        row = dict(shape=shape, params=models[0].num_params(), phases=phases, step_s=step_s)
        row.update(completions_s=B * G / step_s, gflop=flops / 1e9, of_matmul=flops / step_s / matmul)
        # the rollout: one forward over the update's positions, a third of its FLOPs (step_flops)
        row.update(
            rollout_tok_s=B * G * T / phases["rollout"], rollout_of_matmul=update_flops / 3 / phases["rollout"] / matmul
        )
        row.update(update_tok_s=B * G * T / phases["update"], update_of_matmul=update_flops / phases["update"] / matmul)
        if peak:
            row.update(mfu=flops / step_s / peak, update_mfu=update_flops / phases["update"] / peak)
        rows[name] = row
    return rows


def bench_memory(shape, task, tok, args, device, ctx):
    """Peak memory over building the models and two steps (the second with Adam's state in place)."""
    n_layer, n_embd, n_head, B, G, T = shape
    cfg = shape_config(shape, task, tok)
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


def head_variants(args):
    """(name, micro-batch size, logits chunk size) of the update variants the large-vocabulary table compares."""
    M, K = args.micro_batch_size, args.logits_chunk_size
    return [
        ("today (whole batch, plain head)", None, None),
        (f"--micro-batch-size {M}", M, None),
        (f"--logits-chunk-size {K}", None, K),
        (f"both ({M}, {K})", M, K),
    ]


def bench_large_vocab(shape, args, device, ctx, P):
    """Peak live tensor bytes and seconds of the reference log-probs + one update at --vocab V, per variant
    (head_variants). The tokens and rewards are drawn at random (a large-vocabulary model has no task here,
    and the memory and time of an update do not depend on the values); the rollout is left out: it is the
    same in every variant and holds (N, V) logits per token, not (N, T, V). Each variant after a warm-up
    update (Adam's state allocated, not counted)."""
    n_layer, n_embd, n_head, B, G, T = shape
    cfg = GPTConfig(block_size=P + T, vocab_size=args.vocab, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
    models, opt = make_models(cfg, device, args.seed)
    g = torch.Generator().manual_seed(args.seed)
    seq = torch.randint(0, args.vocab, (B * G, P + T), generator=g).to(device)  # (N, P+T)
    adv = group_advantages(torch.rand(B * G, generator=g), G).to(device)  # (N,)
    mask = torch.ones(B * G, T, device=device)  # (N, T)
    timer = PhaseTimer(device)
    rows = []
    for name, micro, chunk in head_variants(args):
        update = partial(grpo_update, models, opt, seq, P, adv, mask, ctx, timer, micro=micro, chunk=chunk)
        update()  # warm-up
        _, peak = peak_memory(update, device)
        dt, _ = timed(update, device, args.repeats)
        timer.read()
        rows.append(dict(name=name, peak=peak, seconds=dt))
    return rows


def bench_head_steps(shapes, task, tok, args, device, ctx):
    """Seconds of one whole GRPO step (rollout included) per variant (head_variants) at the fixed shapes, the
    char vocabulary: the price in time of the two flags where memory is no problem. Best of --repeats after a
    warm-up step, the variants interleaved step by step."""
    out = {}
    for shape in shapes:
        n_layer, n_embd, n_head, B, G, T = shape
        cfg = shape_config(shape, task, tok)
        models, opt = make_models(cfg, device, args.seed)
        batch = Batch(task, tok, B, G, T, args.seed, device)
        timer = PhaseTimer(device)
        fns = {
            name: partial(grpo_step, models, opt, batch, ctx, timer, micro=micro, chunk=chunk)
            for name, micro, chunk in head_variants(args)
        }
        for fn in fns.values():
            fn()  # warm-up
        out[shape], _ = timed_each(fns, device, args.repeats)
        timer.read()
    return out


RSS_QA = [(f"{a}+{b}=", str(a + b)) for a in range(10) for b in range(10)]  # JSONL rows of the RSS run


# runs train_grpo.py and prints the peak RSS (KiB) of that child: a child forked from this small process, not
# from bench.py, whose high-water mark a forked child would inherit (Linux carries it across exec)
RSS_WRAPPER = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
)
RSS_FLAGS = [
    [],
    ["--micro-batch-size", "8"],
    ["--micro-batch-size", "8", "--logits-chunk-size", "256"],
    ["--micro-batch-size", "2"],
    ["--micro-batch-size", "2", "--logits-chunk-size", "256"],
    ["--micro-batch-size", "1", "--logits-chunk-size", "256"],
]
# the floor: the same process with a batch of 2 completions of 1 token (weights, the reference, Adam's state,
# Python and torch): what every run holds whatever its batch; its gradients are not compared (another batch)
RSS_FLOOR = ["--batch-size", "1", "--group-size", "2", "--max-new-tokens", "1"]


def bench_rss(args, work):
    """The issue's measurement: train_grpo.py for two GRPO steps (B 8, G 8, --max-new-tokens 128) from a random
    4 x 128 nanoGPT-format checkpoint over a --rss-vocab character vocabulary, on a JSONL task, with each of
    RSS_FLAGS. The random model earns no reward, so its advantages and (pi_theta = pi_ref) KL gradient are 0: the
    gradients are compared on one more step of each with --entropy-coef 0.01, whose bonus has a gradient.
    Returns {flags: (peak RSS bytes of the two-step process, the bonus run's trace, its logged loss)}."""
    import csv
    import json
    import pickle

    V = args.rss_vocab
    chars = ["\n"] + [chr(i) for i in range(32, 32 + V - 1)]  # below the surrogates (U+D800) for V < 55,000
    with open(os.path.join(work, "meta.pkl"), "wb") as f:  # nanoGPT's data/<dataset>/meta.pkl
        pickle.dump({"vocab_size": V, "itos": dict(enumerate(chars)), "stoi": {c: i for i, c in enumerate(chars)}}, f)
    torch.manual_seed(args.seed)
    cfg = dict(n_layer=4, n_head=4, n_embd=128, block_size=256, bias=False, vocab_size=V, dropout=0.0)
    model = GPT(GPTConfig(**{k: v for k, v in cfg.items() if k != "bias"}, bias=False, ln_bias=False))
    ckpt = os.path.join(work, "ckpt.pt")  # nanoGPT train.py's layout
    torch.save({"model": model.state_dict(), "model_args": cfg, "config": {"dataset": "rss"}, "iter_num": 0}, ckpt)
    data = os.path.join(work, "qa.jsonl")
    with open(data, "w") as f:
        f.writelines(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in RSS_QA)
    root = os.path.dirname(os.path.abspath(__file__))
    runs = {}
    for extra in [*RSS_FLAGS, RSS_FLOOR]:
        out = {"trace": None, "loss": None}
        kinds = (("rss", ["--steps", "2"]), ("grad", ["--steps", "1", "--entropy-coef", "0.01"]))
        for kind, more in kinds[:1] if extra is RSS_FLOOR else kinds:
            d = os.path.join(work, kind + "".join(extra).replace("-", "_"))
            cmd = [sys.executable, "train_grpo.py", "--init-from", ckpt, "--meta", os.path.join(work, "meta.pkl")]
            cmd += ["--task", f"jsonl:{data}", "--batch-size", "8", "--group-size", "8", "--max-new-tokens", "128"]
            cmd += ["--out-dir", d, "--log", os.path.join(d, "g.csv"), "--no-progress", "--device", "cpu"]
            cmd += ["--debug-trace", os.path.join(d, "t.pt"), *more, *extra]
            p = subprocess.run([sys.executable, "-c", RSS_WRAPPER, *cmd], cwd=root, capture_output=True, text=True)
            if p.returncode != 0:
                raise SystemExit(f"bench.py --rss: {shlex.join(cmd)} failed:\n{p.stderr[-2000:]}")
            out[kind] = int(p.stdout.split()[-1]) * 1024  # ru_maxrss is in KiB on Linux
            if kind == "grad":
                out["trace"] = [x for x in torch.load(os.path.join(d, "t.pt"), weights_only=True) if "grads" in x]
                with open(os.path.join(d, "g.csv"), newline="") as f:
                    out["loss"] = float(list(csv.DictReader(f))[1]["loss"])
        runs[" ".join(extra)] = (out["rss"], out["trace"], out["loss"])
    return runs


def max_rel_diff(a, b):
    """Largest |a - b| over every update's gradients, relative to the largest |a| of that parameter."""
    return max(
        ((x["grads"][k] - y["grads"][k]).abs().max() / x["grads"][k].abs().max().clamp(min=1e-30)).item()
        for x, y in zip(a, b, strict=True)
        for k in x["grads"]
    )


# -----------------------------------------------------------------------------
# main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1], formatter_class=HelpFormatter)
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
    parser.add_argument(
        "--matmul-n",
        type=at_least(1),
        default=None,
        help="size of the reference fp32 matmul (default: 8192 on CUDA, 2048 on CPU, 128 with --quick)",
    )
    parser.add_argument("--seed", type=int, default=1337, help="random seed (models, prompts, sampling)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and lengths: seconds, for tests")
    parser.add_argument("--out", default=None, help="also write the tables to this markdown file")
    parser.add_argument(
        "--baseline",
        nargs="+",
        default=[],
        help="git revisions whose model.py generate is timed too, interleaved with today's (one column each)",
    )
    parser.add_argument("--compile", action="store_true", help="also time generate(compile=True) (torch.compile)")
    parser.add_argument("--memory-only", action="store_true", help="only the memory tables (3, 4 and --rss)")
    parser.add_argument("--rss-only", action="store_true", help="only the peak-RSS runs (5)")
    parser.add_argument("--speed-only", action="store_true", help="only the speed tables (1 and 2)")
    parser.add_argument("--vocab", type=at_least(2), default=50257, help="vocabulary of the large-vocabulary table")
    parser.add_argument(
        "--vocab-tokens", type=at_least(1), default=128, help="large-vocabulary table: completion tokens T"
    )
    parser.add_argument("--micro-batch-size", type=at_least(1), default=8, help="the tables' micro-batch size")
    parser.add_argument("--logits-chunk-size", type=at_least(1), default=256, help="the tables' logits chunk size")
    parser.add_argument(
        "--rss",
        action="store_true",
        help="also the peak RSS of two train_grpo.py steps from a large-vocabulary nanoGPT checkpoint (minutes)",
    )
    parser.add_argument("--rss-vocab", type=at_least(2), default=50000, help="--rss: characters in the vocabulary")
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
        args.vocab, args.vocab_tokens, args.micro_batch_size, args.logits_chunk_size = 300, 4, 3, 5
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

    if not (args.memory_only or args.rss_only):  # 1 and 2: the speed tables
        # --- 1. generation
        base = {rev: load_baseline(rev) for rev in args.baseline}  # {revision: its model.py}
        matmul = matmul_flops(device, matmul_n, max(args.repeats, 3))
        gen_cfg = GPTConfig(
            block_size=task.prompt_len + max(args.lengths), vocab_size=tok.vocab_size, n_layer=L, n_head=H, n_embd=C
        )
        gen = bench_generation(gen_cfg, task, tok, args.lengths, args.gen_prompts, args, device, ctx, base)
        extra = [name for name in [*args.baseline, "compiled"] if name in gen[0]["tok_s"]]
        heads = {rev: f"KV cache at {rev} (tok/s) | KV cache: now / {rev}" for rev in args.baseline}
        heads["compiled"] = "compile=True (tok/s) | compiled / KV cache"
        lines += [
            f"Generation, {L} layers x {C} wide ({H} heads), {args.gen_prompts} prompts of {task.prompt_len} "
            f"tokens in parallel, no end token; completion tokens/s, best of {args.repeats}:",
            "",
            "| new tokens | KV cache (tok/s) | full recompute (tok/s) | KV-cache speedup | same tokens |"
            + "".join(f" {heads[name]} |" for name in extra),
            "|---:|---:|---:|---:|:---:|" + "---:|---:|" * len(extra),
        ]
        for r in gen:
            s = r["tok_s"]
            line = f"| {r['T']} | {s['cache']:,.0f} | {s['recompute']:,.0f} | {s['cache'] / s['recompute']:.1f}x "
            line += f"| {'yes' if r['same'] else 'no'} |"
            for rev in args.baseline:
                line += f" {s[rev]:,.0f} | {s['cache'] / s[rev]:.2f}x |"
            if "compiled" in s:
                line += f" {s['compiled']:,.0f} | {s['compiled'] / s['cache']:.2f}x |"
            lines.append(line)
        if device == "cuda":  # in fp32 on a CPU the two paths agree exactly (tests/test_model.py)
            lines += ["", "(bf16: the cached and the recomputed attention round differently, so tokens may differ)"]
        print("\n".join(lines), flush=True)

        # --- 2. GRPO steps by phase
        shapes = list(dict.fromkeys([shape, *fixed]))  # the bench model first, no duplicates
        all_rows = {s: bench_grpo(s, task, tok, args, device, ctx, matmul, peak, base) for s in shapes}
        rows = [r["cache"] for r in all_rows.values()]
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

        # the rollout beside the update, at the fixed shapes: now, and before / compiled where asked
        names = {"cache": "now", "compiled": "compile=True", **{rev: f"at {rev}" for rev in args.baseline}}
        part += [
            "",
            "Rollout beside update at the fixed shapes, from the same steps: completion tokens/s (generated, or "
            "trained on) and FLOP/s over the matmul's; the step with that rollout. Rollout variants: "
            + ", ".join(f"{names[n]}" for n in all_rows[shapes[0]]),
            "",
            "| model | B x G x T | rollout | rollout (s) | rollout tok/s | rollout FLOP/s / matmul | update (s) "
            "| update FLOP/s / matmul | step (s) | step FLOP/s / matmul | rollout tok/s / now's |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in fixed:
            nl, ne, nh, B, G, T = s
            now = all_rows[s]["cache"]
            for name, r in all_rows[s].items():
                p = r["phases"]
                part.append(
                    f"| {nl} x {ne} | {B} x {G} x {T} | {names[name]} | {p['rollout']:.3f} | {r['rollout_tok_s']:,.0f} "
                    f"| {r['rollout_of_matmul']:.1%} | {p['update']:.3f} | {r['update_of_matmul']:.1%} "
                    f"| {r['step_s']:.3f} | {r['of_matmul']:.1%} | {r['rollout_tok_s'] / now['rollout_tok_s']:.2f}x |"
                )
        print("\n".join(part), flush=True)
        lines += part

    mib = 2**20
    if not (args.rss_only or args.speed_only):  # 3 and 4
        # --- 3. memory, GRPO vs PPO
        mem = bench_memory(shape, task, tok, args, device, ctx)
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
        print("\n".join(part), flush=True)
        lines += part

        # --- 4. a large vocabulary: the update's memory with micro-batches and the chunked head
        big = (L, C, H, shape[3], shape[4], args.vocab_tokens)
        vocab_rows = bench_large_vocab(big, args, device, ctx, task.prompt_len)
        steps = bench_head_steps(fixed, task, tok, args, device, ctx)
        today = vocab_rows[0]
        part = [
            "",
            f"Memory of one update at V = {args.vocab:,}, {L} x {C} model, {big[3]} x {big[4]} x {big[5]} (prompts of "
            f"{task.prompt_len} tokens): peak live tensor bytes of the reference log-probs + one update ({what}; "
            f"random tokens and rewards, after a warm-up update), its seconds (best of {args.repeats}), and the "
            "seconds of one whole GRPO step at the fixed shapes (char vocabulary, rollout included, variants "
            "interleaved):",
            "",
            "| update | peak (MiB) | peak / today's | update (s) |"
            + "".join(f" step {s[0]} x {s[1]}, {s[3]} x {s[4]} x {s[5]} (s) |" for s in fixed),
            "|---|---:|---:|---:|" + "---:|" * len(fixed),
        ]
        for r in vocab_rows:
            part.append(
                f"| {r['name']} | {r['peak'] / mib:,.1f} | {r['peak'] / today['peak']:.3f} | {r['seconds']:.2f} |"
                + "".join(f" {steps[s][r['name']]:.3f} |" for s in fixed)
            )
        print("\n".join(part), flush=True)
        lines += part

    # --- 5. the whole process: peak RSS of train_grpo.py from a large-vocabulary checkpoint
    if (args.rss or args.rss_only) and not args.speed_only:
        with tempfile.TemporaryDirectory() as work:
            runs = bench_rss(args, work)
        base_rss, base_trace, base_loss = runs[""]
        floor = runs.pop(" ".join(RSS_FLOOR))[0]
        part = [
            "",
            f"Peak RSS of `train_grpo.py` (ru_maxrss), two GRPO steps, B 8, G 8, --max-new-tokens 128, from a random "
            f"4 x 128 nanoGPT-format checkpoint over {args.rss_vocab:,} characters, a JSONL task, --device cpu; and, "
            "from one step of each with --entropy-coef 0.01 (the random model earns no reward: without the bonus "
            "every gradient is 0), the gradients and the logged loss against the run without the flags. The floor is "
            f"the same process with `{' '.join(RSS_FLOOR)}`: {floor / mib:,.0f} MiB, what it holds whatever the batch; "
            "'above the floor' is each run's peak minus it, over the plain run's:",
            "",
            "| flags | peak RSS (MiB) | / without | above the floor / without's | gradients: max abs diff / max abs "
            "| loss (--entropy-coef 0.01) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for flags, (rss, trace, loss) in runs.items():
            part.append(
                f"| {flags or '(none)'} | {rss / mib:,.0f} | {rss / base_rss:.3f} "
                f"| {(rss - floor) / (base_rss - floor):.3f} | {max_rel_diff(base_trace, trace):.1e} | {loss:.7g} |"
            )
        print("\n".join(part), flush=True)
        lines += part
    lines += ["", f"bench.py took {time.time() - t_start:.0f} s."]
    print("\n".join(lines[-2:]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""
nanogrpo.py: the whole of GRPO in one file, to read in one sitting. A small character-level GPT learns
2-digit addition ("37+48=" -> "85|", "|" the end token): a short SFT, then GRPO (DeepSeekMath,
arXiv:2402.03300, section 4.1) against a verifiable reward.

    python nanogrpo.py                                    # SFT -> GRPO, held-out accuracy at the end
    python nanogrpo.py --steps=100 --lr=1e-4 --seed=1     # any variable of the config below: --key=value
    python nanogrpo.py --init_from=out/arithmetic/policy.pth   # start from a saved SFT policy (no SFT)

Per step: B prompts x G completions sampled with the KV cache (model.py) -> reward -> group-relative
advantages (grpo.group_advantages) -> clipped surrogate with a per-token k3 KL penalty to the frozen SFT
policy (grpo.grpo_loss) -> one Adam step. The task, its split of 500 held-out problems, its reward and
every random draw are those of `python train_grpo.py` (tasks/arithmetic.py's ArithmeticTask): from the same
policy.pth with the same config both scripts log the same numbers (tests/test_nanogrpo.py checks it).
What it leaves out, all in train_grpo.py: DDP, micro-batches, mu > 1 updates per rollout (here
old_logp = logp.detach(), so the ratio is 1 and the clip never acts), the other loss types and advantage
scalings, GRPO's descendants (DAPO, GSPO, CISPO, ...), other tasks and models, checkpoints and resuming.
docs/nanogrpo.md maps each section onto train_grpo.py's.
"""

import copy
import math
import os
import re
import sys
import time
from dataclasses import asdict

import torch

from grpo import group_advantages, grpo_loss
from model import END, GPT, CharTokenizer, GPTConfig, completion_logprobs

# -----------------------------------------------------------------------------
# config: edit the values here, or override them on the command line, e.g. --steps=100
seed = 1337
device = "cpu"  # or "cuda"
init_from = "scratch"  # "scratch": SFT here (saved to out_dir/policy.pth); or the path of a policy.pth
out_dir = "out/nanogrpo"
n_layer = 3  # the model SFT trains from scratch
n_head = 4
n_embd = 128
sft_steps = 1500  # at most; SFT stops earlier once sft_target_acc of 500 training problems are right
sft_batch_size = 64
sft_lr = 1e-3
sft_target_acc = 0.4  # partial SFT, so that GRPO has something left to learn
steps = 200  # GRPO optimizer steps (train_grpo.py: the task's 1200)
batch_size = 32  # prompts per step (B)
group_size = 8  # completions per prompt (G)
lr = 3e-4  # peak learning rate (Adam): linear warmup, then cosine decay to lr/10
warmup_frac = 0.05
beta = 0.04  # weight of the k3 KL penalty to pi_ref
temperature = 1.0  # of the rollouts (the log-probs use the same)
max_new_tokens = 5  # 3 digits + the end token, and 1 to spare
grad_clip = 1.0  # clip the gradient's total 2-norm to this
eval_every = 100  # held-out greedy accuracy every so many steps
log = ""  # a CSV path: every step's numbers at full precision (tests/test_nanogrpo.py reads it)
config = {k: v for k, v in globals().items() if not k.startswith("_") and type(v) in (int, float, str)}
for arg in sys.argv[1:]:  # --key=value, cast to the default's type (nothing is exec'd)
    key, _, value = arg.removeprefix("--").partition("=")
    if arg in ("-h", "--help"):
        print(__doc__ + "\nconfig (the comments at the top of nanogrpo.py say what each is):")
        print("\n".join(f"  --{k}={v!r}" for k, v in config.items()))
        sys.exit(0)
    if not arg.startswith("--") or key not in config or "=" not in arg:
        sys.exit(f"nanogrpo.py: bad argument {arg!r}: expected --key=value, key one of {', '.join(config)}")
    try:
        globals()[key] = type(config[key])(value)
    except ValueError:
        sys.exit(
            f"nanogrpo.py: --{key} takes {type(config[key]).__name__} values (default {config[key]!r}), not {value!r}"
        )
if steps < 1 or batch_size < 1 or group_size < 2 or max_new_tokens < 1 or temperature <= 0:
    sys.exit("nanogrpo.py: need steps >= 1, batch_size >= 1, group_size >= 2, max_new_tokens >= 1, temperature > 0")
torch.manual_seed(seed)

# -----------------------------------------------------------------------------
# the task: "a+b=" for a, b in 10..99; 500 problems held out, with a fixed seed that never depends on `seed`
problems = [f"{a}+{b}=" for a in range(10, 100) for b in range(10, 100)]
perm = torch.randperm(len(problems), generator=torch.Generator().manual_seed(1234)).tolist()
heldout, train = [problems[i] for i in perm[:500]], [problems[i] for i in perm[500:]]
tok = CharTokenizer("0123456789+=")  # 12 characters + the end token
P = 6  # every prompt is 6 characters: no padding anywhere


def answer(prompt):
    a, b = prompt[:-1].split("+")
    return str(int(a) + int(b))


def sample_prompts(g, n):
    return [train[i] for i in torch.randint(len(train), (n,), generator=g).tolist()]


def reward(prompts, completions):
    """1 for the exact sum followed by the end token, + 0.1 for any 1-3 digits that end (the format)."""
    exact = [float(c == answer(p) + END) for p, c in zip(prompts, completions, strict=True)]
    form = [float(re.fullmatch(r"\d{1,3}" + re.escape(END), c) is not None) for c in completions]
    return [1.0 * e + 0.1 * f for e, f in zip(exact, form, strict=True)]


def complete(model, prompts, u=None, temp=0.0):
    """Completions of the prompts, sampled with the KV cache from the uniforms u (N, T), greedy at temp 0.
    Returns (seq (N, P + T) prompt then completion, texts up to and including the end token)."""
    idx = torch.tensor([tok.encode(p) for p in prompts], device=device)  # (N, P)
    out, _ = model.generate(idx, max_new_tokens, temperature=temp, eos_id=tok.eos_id, uniforms=u)  # (N, T)
    return torch.cat([idx, out], 1), [tok.decode_completion(row) for row in out.tolist()]


def accuracy(model, prompts):
    """Greedy exact-match accuracy."""
    texts = complete(model, prompts)[1]
    return sum(c == answer(p) + END for p, c in zip(prompts, texts, strict=True)) / len(prompts)


# -----------------------------------------------------------------------------
# SFT: teacher forcing on the answers (the prompt's positions are ignored, -1), or a saved policy
if init_from == "scratch":
    cfg = GPTConfig(block_size=16, vocab_size=tok.vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
    policy = GPT(cfg).to(device)
    opt = torch.optim.AdamW(policy.parameters(), lr=sft_lr, weight_decay=0.0)
    g, t0 = torch.Generator().manual_seed(seed), time.time()
    for it in range(1, sft_steps + 1):
        rows = [tok.encode(p + answer(p)) + [tok.eos_id] for p in sample_prompts(g, sft_batch_size)]
        L = max(map(len, rows)) - 1  # position t predicts token t + 1
        x = torch.full((len(rows), L), tok.eos_id)  # (n, L)
        y = torch.full((len(rows), L), -1)  # (n, L), -1 is the ignore index
        for i, r in enumerate(rows):
            x[i, : len(r) - 1] = torch.tensor(r[:-1])
            y[i, P - 1 : len(r) - 1] = torch.tensor(r[P:])  # the answer and the end token
        _, loss = policy(x.to(device), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if it % 25 == 0 and accuracy(policy, train[:500]) >= sft_target_acc:
            break
    print(f"SFT: {it} steps, loss {loss.item():.3f}, {time.time() - t0:.1f}s", flush=True)
    ck = {"model": policy.state_dict(), "model_config": asdict(cfg), "task": "arithmetic", "chars": tok.chars}
    os.makedirs(out_dir, exist_ok=True)
    torch.save(ck, f"{out_dir}/policy.pth")  # train_grpo.py --out-dir out_dir starts from it too
else:
    try:
        ck = torch.load(init_from, map_location=device, weights_only=True)  # tensors only: never runs code
    except (OSError, RuntimeError) as e:
        sys.exit(f"nanogrpo.py: cannot load --init_from={init_from}: {str(e).splitlines()[0]}")
    if ck.get("chars") != tok.chars or ck.get("task") != "arithmetic":
        sys.exit(f"nanogrpo.py: {init_from} is not an arithmetic policy of characters {tok.chars!r}")
    cfg = GPTConfig(**ck["model_config"])
    policy = GPT(cfg).to(device)
    policy.load_state_dict(ck["model"])
if P + max_new_tokens > cfg.block_size:
    sys.exit(f"nanogrpo.py: {P} prompt + {max_new_tokens} new tokens exceed the block_size {cfg.block_size}")
ref = copy.deepcopy(policy).eval().requires_grad_(False)  # pi_ref: the SFT policy, frozen
acc_sft = accuracy(policy, heldout)
print(f"SFT policy ({policy.num_params() / 1e6:.2f}M params): held-out accuracy {acc_sft:.3f}", flush=True)

# -----------------------------------------------------------------------------
# GRPO
optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
B, G, T = batch_size, group_size, max_new_tokens
csv = open(log, "w") if log else None
if csv:
    csv.write("step,mean_r,std_r,loss,kl,grad_norm,lr,eval_acc\n")


def lr_at(step):
    """Linear warmup over warmup_frac of the steps, then cosine decay to lr/10 (nanoGPT's get_lr)."""
    warmup = max(1, round(warmup_frac * steps))
    if step <= warmup:
        return lr * step / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


t_start = time.time()
for step in range(1, steps + 1):
    t0 = time.time()
    # --- rollout: the step's random numbers come from (seed, step) alone, as in train_grpo.py
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    prompts = sample_prompts(g, B)
    u = torch.rand(B * G, T, generator=g)  # (N, T) uniforms: the sampling of every token (inverse CDF)
    prompts = [p for p in prompts for _ in range(G)]  # each prompt G times: group b is rows b*G:(b+1)*G
    seq, texts = complete(policy, prompts, u, temperature)  # (N, P + T)
    is_end = (seq[:, P:] == tok.eos_id).long()  # (N, T)
    mask = (is_end.cumsum(1) - is_end == 0).float()  # (N, T) real tokens: up to and including the end token

    # --- reward and group-relative advantages: A_i = (r_i - mean(r_group)) / (std(r_group) + eps)
    r = torch.tensor(reward(prompts, texts))  # (N,)
    adv = group_advantages(r, G).to(device)  # (N,), 0 for a group whose rewards are all equal

    # --- loss: log pi_theta of the sampled tokens (with gradient) and log pi_ref (without)
    with torch.no_grad():
        ref_logp, _ = completion_logprobs(ref, seq, P, temperature)  # (N, T)
    logp, _ = completion_logprobs(policy, seq, P, temperature)  # (N, T)
    # one update per rollout: pi_old == pi_theta, so old_logp is logp detached and the ratio is exactly 1
    loss, stats = grpo_loss(logp, logp.detach(), ref_logp, adv, mask, beta=beta)

    # --- optimizer step
    for pg in optimizer.param_groups:
        pg["lr"] = lr_at(step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip)
    optimizer.step()

    # --- logging: one line per step; held-out greedy accuracy every eval_every steps and at the end
    acc = accuracy(policy, heldout) if step % eval_every == 0 or step == steps else None
    row = [step, r.mean().item(), r.std().item(), loss.item(), stats["kl"].item(), grad_norm.item(), lr_at(step)]
    line = f"step {step:4d} | reward {row[1]:.3f} | loss {row[3]:+.5f} | kl {row[4]:.5f} | grad {row[5]:.3f}"
    line += f" | lr {row[6]:.2e} | {1000 * (time.time() - t0):.0f} ms"
    print(line + ("" if acc is None else f" | held-out accuracy {acc:.3f}"), flush=True)
    if csv:
        csv.write(",".join(map(repr, row)) + f",{'' if acc is None else repr(acc)}\n")
if csv:
    csv.close()
print(f"held-out accuracy: SFT {acc_sft:.3f} -> GRPO {acc:.3f} in {time.time() - t_start:.1f}s of GRPO")

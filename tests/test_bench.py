"""gpu_example.py and bench.py: subprocess smoke runs with tiny settings, and the measuring helpers.

Behaviour only, never speed: the CPU fallback, real training (the KL to the frozen reference is exactly 0
before the first update and positive after it), the tables' rows, the KV cache sampling the same tokens
as full recompute, and the memory accounting against hand-computed byte counts. The GPU tests skip
cleanly on a machine without CUDA.
"""

import re
import time

import pytest
import torch
from conftest import run

import bench
from model import GPT, GPTConfig

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback of a machine without CUDA")

TINY_GPU_EXAMPLE = ["--model-size", "tiny", "--sft-steps", 50, "--steps", 3, "--warmup", 1, "--lr", 1e-3]


def step_lines(stdout):
    return [line for line in stdout.splitlines() if line.startswith("step ")]


def kl_of(line):
    return float(re.search(r"kl (\S+)", line).group(1))


@no_cuda
def test_gpu_example_falls_back_to_cpu_and_trains():
    p = run("gpu_example.py", "--device", "cuda", *TINY_GPU_EXAMPLE, timeout=120)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.splitlines()[0] == "gpu_example.py: no CUDA device visible to torch, falling back to --device cpu"
    steps = step_lines(out)
    assert [s.split()[1] for s in steps] == ["1/3", "2/3", "3/3"]
    assert "(warm-up, not counted)" in steps[0] and "not counted" not in steps[1]
    # pi_theta == pi_ref before the first update (k3 is exactly 0), the updates then move the policy
    assert kl_of(steps[0]) == 0.0 and kl_of(steps[2]) > 0.0
    assert "--- 2 timed steps after 1 warm-up" in out
    assert re.search(r"throughput: [\d,]+ sampled completion tokens/s", out)
    # trained tokens are real completion tokens; positions (prompt and padding included) are named as such
    assert re.search(r"update: [\d,]+ real completion tokens/s trained, [\d,]+ sequence positions/s", out)
    assert "MFU" not in out  # no MFU on a CPU
    assert "peak RSS of the process" in out
    assert "held-out arithmetic: before GRPO {'eval_acc'" in out


def test_gpu_example_rejects_too_few_steps():
    p = run("gpu_example.py", "--device", "cpu", "--steps", 2, "--warmup", 2, timeout=60)
    assert p.returncode == 2 and "must be more than --warmup" in p.stderr


@cuda
def test_gpu_example_on_cuda():
    p = run("gpu_example.py", "--device", "cuda", *TINY_GPU_EXAMPLE, "--batch-size", 16, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "falling back" not in p.stdout
    assert "GiB allocated (torch.cuda.max_memory_allocated)" in p.stdout
    if bench.peak_flops("cuda"):
        assert re.search(r"MFU \(.*\): step [\d.]+%, update [\d.]+%", p.stdout)


def table(stdout, header_start):
    """Rows (lists of cells) of the markdown table whose header starts with header_start."""
    lines = stdout.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[i + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_bench_quick(tmp_path):
    out_md = tmp_path / "bench.md"
    p = run("bench.py", "--quick", "--device", "cpu", "--baseline", "HEAD", "--out", out_md, timeout=120)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.startswith("Device: ") and "Command: `python bench.py --quick --device cpu" in out
    gen = table(out, "| new tokens |")
    assert [r[0] for r in gen] == ["4", "8"]
    for r in gen:
        assert float(r[1].replace(",", "")) > 0 and float(r[2].replace(",", "")) > 0 and r[3].endswith("x")
        # fp32 on a CPU: the KV cache (and the baseline's) samples exactly what full recompute samples
        assert r[4] == "yes"
        assert float(r[5].replace(",", "")) > 0 and r[6].endswith("x")  # the baseline's column, its ratio
    # the rollout beside the update: one row per fixed shape and rollout variant (now, the baseline)
    roll = table(out, "| model | B x G x T | rollout |")
    assert [r[:3] for r in roll] == [
        ["1 x 32", "2 x 2 x 4", "now"],
        ["1 x 32", "2 x 2 x 4", "at HEAD"],
        ["2 x 32", "2 x 2 x 8", "now"],
        ["2 x 32", "2 x 2 x 8", "at HEAD"],
    ]
    for r in roll:
        assert all(c.endswith("%") for c in (r[5], r[7], r[9])) and r[10].endswith("x")
    assert [r[10] for r in roll[::2]] == ["1.00x", "1.00x"]  # the current rollout against itself
    grpo = table(out, "| model | B x G x T |")
    assert [r[:2] for r in grpo] == [["1 x 32 (2 heads)", "2 x 2 x 4"], ["2 x 32 (2 heads)", "2 x 2 x 8"]]
    for r in grpo:
        rollout, reward, ref, update, step = map(float, r[3:8])
        assert step == pytest.approx(rollout + reward + ref + update, abs=2e-3)  # the phases cover the step
    mem = table(out, "| method | models held |")
    assert [r[0] for r in mem] == ["GRPO", "PPO", "GRPO / PPO"]
    grpo_state, ppo_state = float(mem[0][2]), float(mem[1][2])
    assert grpo_state < ppo_state  # PPO also holds a value model with its gradients and Adam state
    assert 0 < float(mem[0][3]) < float(mem[1][3])
    # a large vocabulary: each flag, and both, hold less than the whole batch through the plain head
    head = table(out, "| update | peak (MiB) |")
    assert [r[0] for r in head] == [
        "today (whole batch, plain head)",
        "--micro-batch-size 3",
        "--logits-chunk-size 5",
        "both (3, 5)",
    ]
    assert head[0][2] == "1.000" and all(0 < float(r[2]) < 1 for r in head[1:])
    assert float(head[3][2]) < min(float(r[2]) for r in head[1:3])
    assert "MFU" not in out
    assert out_md.read_text().strip() in out


@cuda
def test_bench_quick_on_cuda():
    p = run("bench.py", "--quick", "--device", "cuda", timeout=300)
    assert p.returncode == 0, p.stderr
    if bench.peak_flops("cuda"):
        assert "MFU step / update" in p.stdout


def test_peak_memory_sees_a_freed_tensor():
    """Two 4 MiB tensors alive at once, one freed before the end: the peak is 8 MiB, not 4."""

    def f():
        a = torch.ones(2**20)
        b = torch.ones(2**20)
        del b
        return a

    a, peak = bench.peak_memory(f, "cpu")
    assert a.numel() == 2**20
    assert peak == 8 * 2**20


def test_state_bytes_counts_params_grads_and_adam():
    """policy (params, grads, Adam's exp_avg and exp_avg_sq, a step scalar per tensor) + a frozen copy."""
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=16))
    ref = GPT(model.config).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters())
    model(torch.zeros(2, 8, dtype=torch.long))[0].sum().backward()
    opt.step()
    n, k = model.num_params(), len(list(model.parameters()))  # tied weights counted once
    assert bench.state_bytes([model, ref], [opt]) == 4 * (n + n + 2 * n + k) + 4 * ref.num_params()


def test_phase_timer_on_cpu():
    timer = bench.PhaseTimer("cpu")
    with timer("a"):
        time.sleep(0.01)
    with timer("b"):
        pass
    with timer("a"):
        pass
    t = timer.read()
    assert list(t) == ["a", "b"] and t["a"] >= 0.01 and t["b"] < t["a"]
    assert timer.read() == {}  # read() starts the next step afresh


# -----------------------------------------------------------------------------
# FLOP counts and MFU arithmetic, against a counter and a hand count


def counted_flops(fn):
    """FLOPs of the matrix multiplies fn runs, counted by torch's FlopCounterMode (mm, addmm, bmm only: the
    attention is counted by hand below, whatever the counter knows of SDPA on this torch)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    counts = counter.get_flop_counts()["Global"]
    return sum(n for op, n in counts.items() if str(op).split(".")[-1] in ("mm", "addmm", "bmm"))


def test_flops_per_token_matches_counted_matmuls_and_hand_counted_attention():
    """6N from counting every matmul of a forward + backward; 12*L*H*Q*T from a hand-written attention."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=11, block_size=24, n_layer=2, n_head=2, n_embd=16)
    model, B, T = GPT(cfg), 3, 20
    x = torch.randint(0, 11, (B, T))
    mm = counted_flops(lambda: model(x)[0].sum().backward())  # the linear layers and the tied lm_head
    assert mm == 6 * (2 * (16 * 48 + 16 * 16 + 16 * 64 + 64 * 16) + 11 * 16) * B * T  # 6 x matmul weights x tokens
    # attention: q @ k^T and att @ v, forward + backward, per layer (what SDPA does, written out)
    q, k, v = (torch.randn(B, 2, T, 8, requires_grad=True) for _ in range(3))  # (B, nh, T, hs)
    att = counted_flops(lambda: ((q @ k.transpose(-2, -1)).softmax(-1) @ v).sum().backward())
    n_ln = sum(p.numel() for n, p in model.named_parameters() if ".ln_" in n or "ln_f" in n)  # counted in 6N, no matmul
    assert model.flops_per_token(T) * B * T == mm + cfg.n_layer * att + 6 * n_ln * B * T


def test_step_flops_and_mfu_arithmetic():
    """bench's GRPO row: the update is a counted forward + backward over N x (P+T-1) positions, the step
    5/3 of it (rollout and reference: a forward each), and the ratios divide those by the measured time."""
    import argparse

    from tasks.shakespeare import ShakespeareTask

    task = ShakespeareTask()
    tok = bench.CharTokenizer(task.chars)
    shape = (1, 32, 2, 2, 2, 4)  # n_layer, n_embd, n_head, B, G, T
    args = argparse.Namespace(repeats=1, seed=0, compile=False)
    (name, row), *others = bench.bench_grpo(shape, task, tok, args, "cpu", bench.nullcontext(), 1e9, 1e12).items()
    assert name == "cache" and others == []  # no --baseline, no --compile: the current rollout only
    model = GPT(GPTConfig(block_size=task.prompt_len + 4, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32))
    N, L = 4, task.prompt_len + 4 - 1
    update = model.flops_per_token(L) * N * L
    assert bench.step_flops(model, N, task.prompt_len, 4) == (update * 5 / 3, update)
    assert row["gflop"] == pytest.approx(update * 5 / 3 / 1e9)
    assert row["of_matmul"] == pytest.approx(update * 5 / 3 / row["step_s"] / 1e9)
    assert row["mfu"] == pytest.approx(update * 5 / 3 / row["step_s"] / 1e12)
    assert row["update_mfu"] == pytest.approx(update / row["phases"]["update"] / 1e12)
    assert row["step_s"] == pytest.approx(sum(row["phases"].values()))
    # the rollout: a forward over the update's positions, a third of its FLOPs; tokens/s over N x T
    assert row["rollout_of_matmul"] == pytest.approx(update / 3 / row["phases"]["rollout"] / 1e9)
    assert row["rollout_tok_s"] == pytest.approx(N * 4 / row["phases"]["rollout"])
    assert row["update_of_matmul"] == pytest.approx(update / row["phases"]["update"] / 1e9)


def test_baseline_model_shares_the_weights_and_samples_the_same():
    """--baseline: model.py at a git revision, its GPT on the same parameter storage (an optimizer step on the
    current model is seen by it), sampling what the current generate samples (fp32, CPU)."""
    base = bench.load_baseline("HEAD")
    assert base.__name__ == "model_baseline" and base.GPT is not GPT
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=11, n_layer=2, n_head=2, n_embd=16))
    old = bench.baseline_model(base, model)
    with torch.no_grad():
        model.lm_head.weight.mul_(5.0)  # seen by the baseline's model: the same storage
    idx, u = torch.randint(0, 10, (3, 4)), torch.rand(3, 8)
    a, lp_a = model.generate(idx, 8, uniforms=u)
    b, lp_b = old.generate(idx, 8, uniforms=u)
    assert torch.equal(a, b) and torch.equal(lp_a, lp_b)


def test_timed_each_interleaves_and_keeps_the_best():
    calls = []
    dt, out = bench.timed_each({"a": lambda: calls.append("a") or 1, "b": lambda: calls.append("b") or 2}, "cpu", 3)
    assert calls == ["a", "b"] * 3 and out == {"a": 1, "b": 2} and set(dt) == {"a", "b"}

"""--micro-batch-size and --logits-chunk-size (docs/memory.md): fixed memory at any batch, the same gradient.

The chunked head is checked in process against the plain head and against a log_softmax + gather written out
here; the micro-batches through train_grpo.py's --debug-trace (the gradient of each update, all-reduced,
before clipping), against the same run in one piece, in one process and under 2 gloo ranks. Gradients, not
parameters: Adam and the clip are blind to a uniform scale of the loss, so a micro-batch share counted twice
would leave the parameters nearly equal.
"""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, TINY, run

from grpo import token_entropy
from model import GPT, GPTConfig, completion_logprobs, completion_logprobs_chunked

SMALL = ["--batch-size", 4, "--group-size", 4, "--eval-every", 2, "--no-progress", "--lr", 1e-2, *TINY]
STAT_COLUMNS = ("kl", "entropy", "clip_frac", "loss", "grad_norm")


def rows(path):
    """The RL steps' rows (after step 0, the starting policy's evaluation)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))[1:]


def grads(trace):
    return [x for x in torch.load(trace, weights_only=True) if "grads" in x]


def assert_same_updates(one, two, n_updates, same_clip_frac=True):
    """The same gradient in every update of the two traces, every parameter moved by it (and the same clip_frac
    of the update, unless one trace is rank 0's of a DDP run: its stats are that rank's)."""
    assert [(x["step"], x["it"]) for x in one] == [(x["step"], x["it"]) for x in two] and len(one) == n_updates
    for a, b in zip(one, two, strict=True):
        assert not same_clip_frac or b["clip_frac"] == pytest.approx(a["clip_frac"], abs=1e-6)
        for k, g in a["grads"].items():
            assert g.abs().max() > 0, f"{k} has no gradient"
            torch.testing.assert_close(b["grads"][k], g, rtol=1e-4, atol=1e-5 * g.abs().max().item(), msg=k)


def assert_same_rows(path_a, path_b):
    for x, y in zip(rows(path_a), rows(path_b), strict=True):  # every logged column keeps its definition
        for col in ("mean_r", "len_mean", *STAT_COLUMNS):
            if x[col] == "" or y[col] == "":  # kl at --beta 0
                assert x[col] == y[col], col
                continue
            assert float(y[col]) == pytest.approx(float(x[col]), rel=1e-4, abs=1e-6), col


def grpo_run(out_dir, *flags):
    p = run(
        "train_grpo.py", "--out-dir", out_dir, "--log", out_dir / "g.csv", "--debug-trace", out_dir / "t.pt", *flags
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return out_dir / "t.pt", out_dir / "g.csv"


# -----------------------------------------------------------------------------
# the chunked head


def plain_logprobs_entropy(model, seq, n_prompt, temperature, prompt_mask):
    """The second implementation: full logits, log_softmax, gather; entropy from the same log_softmax."""
    mask = torch.cat([prompt_mask, torch.ones_like(seq[:, n_prompt:])], 1)
    logits, _ = model(seq[:, :-1], attention_mask=mask[:, :-1])
    logq = F.log_softmax(logits[:, n_prompt - 1 :] / temperature, -1)  # (N, T, V)
    return logq.gather(-1, seq[:, n_prompt:, None]).squeeze(-1), -(logq.exp() * logq).sum(-1)


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_head_matches_the_plain_head(chunk):
    """Log-probs, entropy and the gradient of both, for a chunk of one position, one that does not divide N*T
    and one larger than N*T. Bugs caught: logits taken from the wrong position (n_prompt instead of
    n_prompt - 1), the temperature left out, the tied weight losing the head's gradient, a checkpoint that
    recomputes a different chunk, the log-sum-exp detached (one-hot gradient instead of one-hot - softmax)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=53, block_size=32, n_layer=2, n_head=2, n_embd=32))
    N, P, T, temp = 5, 6, 9, 0.7
    seq = torch.randint(0, 53, (N, P + T))
    pmask = torch.ones(N, P, dtype=torch.long)
    pmask[0, :2] = pmask[3, :4] = 0  # left padding
    w1, w2 = torch.randn(N, T), torch.randn(N, T)

    def grad_of(fn):
        model.zero_grad(set_to_none=True)
        logp, H = fn()
        ((logp * w1).sum() + (H * w2).sum()).backward()
        return logp.detach(), H.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    def plain_head():
        logp, logits = completion_logprobs(model, seq, P, temp, pmask)
        return logp, token_entropy(logits)

    lp_c, H_c, g_c = grad_of(lambda: completion_logprobs_chunked(model, seq, P, temp, pmask, chunk, entropy_grad=True))
    for fn in (plain_head, lambda: plain_logprobs_entropy(model, seq, P, temp, pmask)):
        lp, H, g = grad_of(fn)
        torch.testing.assert_close(lp_c, lp, rtol=0, atol=1e-5)
        torch.testing.assert_close(H_c, H, rtol=0, atol=1e-5)
        for k in g:
            torch.testing.assert_close(g_c[k], g[k], rtol=1e-4, atol=1e-6 * g[k].abs().max().item(), msg=k)
    with torch.no_grad():  # no graph: the plain loop, the same numbers
        lp_n, H_n = completion_logprobs_chunked(model, seq, P, temp, pmask, chunk_size=chunk)
    assert torch.equal(lp_n, lp_c) and torch.equal(H_n, H_c)


def test_chunked_head_never_holds_the_logits():
    """The backward of a chunked head keeps no (N, T, V) tensor: the largest allocation of a forward and backward
    is a few chunk x V buffers. Bug caught: a head that is not checkpointed (it would save every chunk's logits).
    The plain head's: the logits and one tensor of their size, the gradient (grpo.SelectiveLogSoftmax); autograd's
    own gather - logsumexp on a slice holds four (a slice's zero-filled gradient, gather's, logsumexp's, their
    sum)."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    V, N, P, T, chunk = 4000, 4, 4, 32, 16
    model = GPT(GPTConfig(vocab_size=V, block_size=64, n_layer=1, n_head=2, n_embd=16))
    seq = torch.randint(0, V, (N, P + T))
    for fn, most in ((completion_logprobs_chunked, 6 * chunk * V * 4), (completion_logprobs, N * T * V * 4)):
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            logp, H = fn(
                model, seq, P, 1.0, None, **({"chunk_size": chunk} if fn is completion_logprobs_chunked else {})
            )
            logp.sum().backward()
        events = sorted(
            (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
        )
        live = peak = 0
        for e in events:
            live += e.nbytes()
            peak = max(peak, live)
        weights = 3 * V * 16 * 4  # the head's (V, C) gradient, its sum with the embedding's, the weight
        if fn is completion_logprobs_chunked:
            assert peak < most + weights, peak
        else:  # the plain head: at least the logits of every completion position, at most them and one gradient
            assert most < peak < 2 * N * (P + T - 1) * V * 4 + weights + 10**6, peak


# -----------------------------------------------------------------------------
# micro-batches: the whole batch's gradient


# (loss type, extra flags): every normaliser; mu = 2 takes the pi_old path; the bonus and the chunked head once
# each; --mask-truncated gives completions of no tokens. 16 completions in micro-batches of 3: the last holds 1.
MICRO_CASES = [
    ("grpo", ["--num-iterations", 2, "--entropy-coef", 0.01]),
    ("bnpo", ["--mask-truncated", "--max-new-tokens", 4]),
    ("dapo", ["--entropy-coef", 0.01, "--logits-chunk-size", 5]),
    ("dr_grpo", ["--scale", "none", "--logits-chunk-size", 7]),
    ("cispo", ["--num-iterations", 2, "--beta", 0]),
]


@pytest.mark.parametrize("loss_type,flags", MICRO_CASES, ids=[c[0] for c in MICRO_CASES])
def test_micro_batches_give_the_whole_batch_gradient(sft_dir, tmp_path, loss_type, flags):
    """--micro-batch-size 3 (16 completions: 3+3+3+3+3+1) gives each update the gradient of the whole batch in
    one piece, and logs the same kl, entropy, clip_frac, loss and grad_norm. Bugs caught: each micro-batch
    normalised by its own completions (grpo, dr_grpo) or tokens (bnpo, dapo) instead of the batch's, the last,
    smaller micro-batch weighted like the others, gradients zeroed between micro-batches, a stat averaged over
    micro-batches instead of over tokens."""
    micro = tmp_path / "micro"
    shutil.copytree(sft_dir, micro)
    flags = ["--steps", 2, "--loss-type", loss_type, *flags, *SMALL]
    one = grpo_run(sft_dir, *flags)
    two = grpo_run(micro, *flags, "--micro-batch-size", 3)
    mu = flags[flags.index("--num-iterations") + 1] if "--num-iterations" in flags else 1
    assert_same_updates(grads(one[0]), grads(two[0]), 2 * mu)
    assert_same_rows(one[1], two[1])


def torchrun(out_dir, *flags):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train_grpo.py"]
    cmd += ["--out-dir", str(out_dir), "--metrics-csv", str(out_dir / "g.csv"), "--debug-trace", str(out_dir / "t.pt")]
    p = subprocess.run(cmd + [str(f) for f in flags], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return out_dir / "t.pt", out_dir / "g.csv"


# (loss type, flags of both runs, flags of the 2-rank run only). The first two are issue 18's: the entropy bonus
# counted world times under dapo and cispo (the loss is multiplied by world after the bonus was subtracted).
DDP_CASES = [
    ("dapo", ["--entropy-coef", 0.05], []),
    ("cispo", ["--entropy-coef", 0.05, "--num-iterations", 2], []),
    ("grpo", ["--entropy-coef", 0.05, "--mask-truncated", "--max-new-tokens", 4], ["--micro-batch-size", 3]),
    ("dapo", ["--num-iterations", 2], ["--micro-batch-size", 5, "--logits-chunk-size", 6]),
]


@pytest.mark.parametrize(
    "loss_type,flags,ddp_flags", DDP_CASES, ids=["dapo-bonus", "cispo-bonus", "grpo-micro", "dapo-micro"]
)
def test_ddp_with_bonus_and_micro_batches_matches_one_process(sft_dir, tmp_path, loss_type, flags, ddp_flags):
    """2 gloo ranks (with micro-batches of 3 or 5 of each rank's 8 completions, and the chunked head) compute
    the gradient of 1 process on the whole batch in one piece, entropy bonus included, and log the same numbers.
    Bugs caught: the bonus scaled by world under dapo and cispo (issue 18: 2x with 2 ranks), the bonus a mean of
    the ranks' token means (grpo with --mask-truncated, where the ranks' token counts differ), a micro-batch's
    share or a token count taken from the rank's micro-batch instead of the global batch."""
    ddp_dir = tmp_path / "ddp"
    shutil.copytree(sft_dir, ddp_dir)
    flags = ["--steps", 2, "--loss-type", loss_type, "--device", "cpu", *flags, *SMALL]
    one = grpo_run(sft_dir, *flags)
    two = torchrun(ddp_dir, *flags, *ddp_flags)
    mu = flags[flags.index("--num-iterations") + 1] if "--num-iterations" in flags else 1
    assert_same_updates(grads(one[0]), grads(two[0]), 2 * mu, same_clip_frac=False)
    assert_same_rows(one[1], two[1])


# -----------------------------------------------------------------------------
# the flags from the command line


def test_top_entropy_mask_with_micro_batches_is_refused(sft_dir):
    """The top-entropy threshold is a quantile over the rank's batch: per micro-batch it would be another one."""
    p = run("train_grpo.py", "--out-dir", sft_dir, "--log", sft_dir / "g.csv", "--steps", 1, *SMALL,
            "--top-entropy-quantile", 0.2, "--micro-batch-size", 4)  # fmt: skip
    assert p.returncode == 2 and "--top-entropy-quantile" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    p = run("train_grpo.py", "--out-dir", sft_dir, "--log", sft_dir / "g.csv", "--steps", 1, *SMALL,
            "--top-entropy-quantile", 0.2, "--micro-batch-size", 16, "--logits-chunk-size", 8)  # fmt: skip
    assert p.returncode == 0, p.stderr  # one micro-batch of the whole batch: allowed


def test_gpt2_folder_with_micro_batches_and_chunked_head(tiny_gpt2, tmp_path):
    """The issue's command on the tiny offline GPT-2 (padded prompts, a BPE vocabulary): it trains and logs."""
    from test_bring_your_own import QA

    path, _, _ = tiny_gpt2
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QA * 4))
    for extra in (["--micro-batch-size", 8], ["--micro-batch-size", 3, "--logits-chunk-size", 16]):
        p = run("train_grpo.py", "--init-from", path, "--task", f"jsonl:{data}", *extra, "--batch-size", 4,
                "--group-size", 4, "--steps", 2, "--eval-every", 2, "--out-dir", tmp_path / "o",
                "--log", tmp_path / "q.csv", "--no-progress")  # fmt: skip
        assert p.returncode == 0, p.stderr[-3000:]
        log = rows(tmp_path / "q.csv")
        assert len(log) == 2 and log[-1]["eval_acc"] != "" and log[-1]["loss"] != "" and log[-1]["skipped"] == "0"

"""Async GRPO (docs/async.md): rollout workers on torch.distributed, staleness bounded, off-policy corrections.

The corrections (grpo.py off_policy_weight) are checked against hand-computed weights and a loop written out; the
driver (train_grpo.py --rollout-workers) against the single-process run at --max-staleness 0, and the logged policy
lag against the weights that really sampled each batch. Each test names the plausible bug it catches.
"""

import csv
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, TINY, run

from grpo import grpo_loss, off_policy_weight
from model import GPT, GPTConfig, completion_logprobs
from utils.ckpt import load_checkpoint

SMALL = ["--batch-size", 4, "--group-size", 4, "--eval-every", 2, "--no-progress", *TINY]
L = math.log


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -----------------------------------------------------------------------------
# the corrections, pure


def weights_case():
    """Two completions of 3 tokens, the last token of the second is padding; rho = pi_prox / mu by hand."""
    rho = [[3.0, 0.5, 1.5], [1.5, 1.2, 7.0]]
    behav = torch.tensor([[L(0.1), L(0.4), L(0.2)], [L(0.2), L(0.5), L(0.1)]])
    prox = behav + torch.tensor(rho).log()
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    return prox, behav, mask


@pytest.mark.parametrize(
    "mode,expected,capped",
    [
        ("tis", [[2.0, 0.5, 1.5], [1.5, 1.2, 0.0]], 1 / 5),  # min(rho, 2); padding 0
        ("decoupled", [[0.0, 0.5, 1.5], [1.5, 1.2, 0.0]], 1 / 5),  # rho above the cap leaves (AReaL)
        ("mis", [[0.0, 0.0, 0.0], [1.8, 1.8, 0.0]], 3 / 5),  # products 2.25 > 2 (masked) and 1.8 (padding not in it)
    ],
)
def test_off_policy_weights_hand_computed(mode, expected, capped):
    """Bugs: truncating where AReaL masks, a product over the padding (the second row's 7.0), a token-level
    cap in mis, the cap counted over padding, a weight that carries a gradient."""
    prox, behav, mask = weights_case()
    prox.requires_grad_(True)
    w, stats = off_policy_weight(prox, behav, mask, mode, cap=2.0)
    assert not w.requires_grad
    torch.testing.assert_close(w, torch.tensor(expected), atol=1e-6, rtol=0)
    assert stats["is_capped_frac"].item() == pytest.approx(capped)
    assert stats["is_weight"].item() == pytest.approx(sum(map(sum, expected)) / 5, rel=1e-6)


@pytest.mark.parametrize("mode", ["tis", "mis", "decoupled"])
def test_weights_are_one_on_policy(mode):
    """At lag 0 (mu == pi_prox) every method gives weight 1 on every real token: the on-policy loss."""
    prox, _, mask = weights_case()
    w, stats = off_policy_weight(prox, prox.clone(), mask, mode)
    assert torch.equal(w, mask) and stats["is_capped_frac"] == 0


def test_bad_mode_and_cap_refused():
    prox, behav, mask = weights_case()
    with pytest.raises(ValueError, match="unknown off-policy"):
        off_policy_weight(prox, behav, mask, "none")
    with pytest.raises(ValueError, match="exceed 1"):
        off_policy_weight(prox, behav, mask, "tis", cap=1.0)


def loop_loss(logp, old, ref, A, mask, w, eps=0.2, beta=0.04):
    """The weighted GRPO loss written out token by token: the second, obviously correct implementation."""
    total = 0.0
    for i in range(len(logp)):
        n = sum(mask[i])
        s = 0.0
        for t in range(len(logp[i])):
            if mask[i][t] == 0:
                continue
            r = math.exp(logp[i][t] - old[i][t])
            pg = max(-r * A[i], -min(max(r, 1 - eps), 1 + eps) * A[i])
            d = ref[i][t] - logp[i][t]
            s += w[i][t] * pg + beta * (math.exp(d) - d - 1)
        total += s / n
    return total / len(logp)


@pytest.mark.parametrize("mode", ["tis", "mis", "decoupled"])
def test_weighted_loss_matches_a_loop_and_its_gradient_is_scaled(mode):
    """The weight multiplies the policy-gradient term only (not the KL term, not the normaliser), and the
    gradient of each token's policy-gradient term is w times the unweighted one. Bugs: the KL weighted too,
    the weight inside the ratio (a gradient through it), the normaliser changed."""
    torch.manual_seed(0)
    prox, behav, mask = weights_case()
    logp = (prox + 0.3 * torch.randn(2, 3)).requires_grad_(True)
    ref = prox - 0.2
    A = torch.tensor([1.0, -0.7])
    w, _ = off_policy_weight(prox, behav, mask, mode)
    loss, _ = grpo_loss(logp, prox, ref, A, mask, is_weight=w)
    expected = loop_loss(logp.tolist(), prox.tolist(), ref.tolist(), A.tolist(), mask.tolist(), w.tolist())
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    (g_w,) = torch.autograd.grad(loss, logp)
    logp0 = logp.detach().requires_grad_(True)
    pg_w, _ = grpo_loss(logp0, prox, ref, A, mask, beta=0.0, is_weight=w)
    pg_1, _ = grpo_loss(logp0, prox, ref, A, mask, beta=0.0)
    (g_pw,) = torch.autograd.grad(pg_w, logp0)
    (g_p1,) = torch.autograd.grad(pg_1, logp0)
    torch.testing.assert_close(g_pw, w * g_p1)
    assert not torch.equal(g_w, g_pw)  # the KL term's gradient is there, unweighted


def test_unit_weights_change_nothing():
    torch.manual_seed(1)
    prox, _, mask = weights_case()
    logp = prox + 0.1 * torch.randn(2, 3)
    A = torch.tensor([0.5, -1.0])
    a, _ = grpo_loss(logp, prox, prox - 0.1, A, mask)
    b, _ = grpo_loss(logp, prox, prox - 0.1, A, mask, is_weight=torch.ones(2, 3))
    assert torch.equal(a, b)


# -----------------------------------------------------------------------------
# the driver: torchrun with rollout workers


def torchrun(nproc, *args, timeout=300, popen=False):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "train_grpo.py"]
    cmd += [str(a) for a in args]
    if popen:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout)


def copy_sft(sft_dir, tmp_path, name):
    d = tmp_path / name
    shutil.copytree(sft_dir, d)
    return d


def test_staleness_0_equals_the_synchronous_run(sft_dir, tmp_path):
    """--rollout-workers 1 --max-staleness 0: the worker samples each batch with the learner's latest weights, so
    step 1's loss and gradient equal the single-process run's (the ratio is against the sampler's stored log-probs
    instead of the training forward's: equal to float rounding), and every logged reward is the same. Bugs: the
    batch of the wrong step or prompts, the weights not sent or sent late (a lag of 1), rewards or masks
    scrambled in transit, the ratio taken against the wrong log-probs."""
    a = copy_sft(sft_dir, tmp_path, "sync")
    flags = ["--steps", 3, "--lr", 1e-2, *SMALL]
    p = run("train_grpo.py", "--out-dir", a, "--log", a / "g.csv", "--debug-trace", a / "t.pt", *flags)
    assert p.returncode == 0, p.stderr
    b = copy_sft(sft_dir, tmp_path, "async")
    p = torchrun(2, "--out-dir", b, "--metrics-csv", b / "g.csv", "--debug-trace", b / "t.pt", *flags,
                 "--rollout-workers", 1, "--max-staleness", 0)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    one = [x for x in torch.load(a / "t.pt", weights_only=True) if "grads" in x]
    two = [x for x in torch.load(b / "t.pt", weights_only=True) if "grads" in x]
    for name, g in one[0]["grads"].items():
        torch.testing.assert_close(two[0]["grads"][name], g, rtol=1e-4, atol=1e-7)
    sync, asyn = rows(a / "g.csv"), rows(b / "g.csv")
    assert [r["policy_lag"] for r in asyn[1:]] == ["0", "0", "0"]
    for r1, r2 in zip(sync[1:], asyn[1:], strict=True):
        assert (r1["mean_r"], r1["std_r"], r1["len_mean"]) == (r2["mean_r"], r2["std_r"], r2["len_mean"])
        assert float(r2["loss"]) == pytest.approx(float(r1["loss"]), rel=1e-4, abs=1e-6)
        assert abs(float(r2["behav_kl"])) < 1e-5  # mu == pi_prox at lag 0


def test_logged_lag_is_the_true_one(sft_dir, tmp_path):
    """With 2 workers and --max-staleness 2 each batch's stored log-probs are those of the weights the learner had
    after `version` steps, version = step - 1 - lag, and of no other version. Recomputed here from the SFT policy
    and the weights saved after each step. Bugs: the lag computed, not measured (a worker that used newer or
    older weights), versions crossed between the two workers, the round robin off by one."""
    d = copy_sft(sft_dir, tmp_path, "lag")
    p = torchrun(3, "--out-dir", d, "--metrics-csv", d / "g.csv", "--debug-trace", d / "t.pt", "--steps", 6, "--lr", 3e-2,
                 *SMALL, "--rollout-workers", 2, "--max-staleness", 2)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    trace = [x for x in torch.load(d / "t.pt", weights_only=True) if "version" in x]
    lags = [int(r["policy_lag"]) for r in rows(d / "g.csv")[1:]]
    assert [x["version"] for x in trace] == [0, 0, 0, 1, 2, 3] and lags == [0, 1, 2, 2, 2, 2]
    ck = load_checkpoint(d / "policy.pth")
    model = GPT(GPTConfig(**ck["model_config"]))
    model.load_state_dict(ck["model"])
    versions = [torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()]
    versions += [x["weights"] for x in trace]  # version v: the weights after step v

    def logp_under(v, x):
        torch.nn.utils.vector_to_parameters(versions[v], model.parameters())
        with torch.no_grad():
            return completion_logprobs(model, x["seq"], x["pmask"].size(1), 1.0, x["pmask"])[0]

    for x in trace:
        m = x["mask"].bool()
        err = {v: (logp_under(v, x) - x["behav_logp"])[m].abs().max().item() for v in range(len(versions) - 1)}
        assert err[x["version"]] < 1e-4, (x["step"], err)
        others = [e for v, e in err.items() if v != x["version"] and (v > 0 or x["version"] > 0)]
        assert min(others) > 1e-3, (x["step"], err)  # another version's weights give other log-probs


@pytest.mark.parametrize("mode", ["none", "tis", "mis", "decoupled"])
def test_async_run_with_each_correction_logs_its_columns(sft_dir, tmp_path, mode):
    """Every correction runs through the driver and logs finite columns; corrected runs log is_weight near 1 at
    these small steps. Bug: a flag that is parsed and never reaches the loss (is_weight empty or exactly 1 with lag)."""
    d = copy_sft(sft_dir, tmp_path, mode)
    p = torchrun(2, "--out-dir", d, "--metrics-csv", d / "g.csv", "--steps", 4, "--lr", 3e-2, *SMALL,
                 "--rollout-workers", 1, "--max-staleness", 1, "--off-policy", mode)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    r = rows(d / "g.csv")[1:]
    assert [x["policy_lag"] for x in r] == ["0", "1", "1", "1"]
    assert all(math.isfinite(float(x["behav_kl"])) and float(x["wait_s"]) >= 0 for x in r)
    assert abs(float(r[0]["behav_kl"])) < 1e-5 < abs(float(r[-1]["behav_kl"]))  # lag 0, then a real gap
    if mode != "none":
        assert abs(float(r[0]["is_weight"]) - 1) < 1e-4 and float(r[-1]["is_weight"]) != pytest.approx(1.0, abs=1e-6)
    else:
        assert "is_weight" not in r[0]


def test_rollout_workers_needs_torchrun(sft_dir):
    p = run("train_grpo.py", "--out-dir", sft_dir, "--steps", 1, *SMALL, "--rollout-workers", 1)
    assert p.returncode == 2 and "--nproc_per_node=2" in p.stderr, p.stderr
    p = run("train_grpo.py", "--out-dir", sft_dir, "--steps", 1, *SMALL, "--rollout-workers", 1, "--dynamic-sampling")
    assert p.returncode == 2 and "--dynamic-sampling" in p.stderr, p.stderr
    p = run("train_grpo.py", "--out-dir", sft_dir, "--steps", 1, *SMALL, "--max-staleness", 2)  # silently ignored?
    assert p.returncode == 2 and "needs --rollout-workers" in p.stderr, p.stderr


def worker_pid(marker):
    """The pid of the process of rank 1 (a rollout worker) whose command line holds marker."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"RANK=1" in env and marker.encode() in cmd:
            return int(pid)
    return None


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker's pid through /proc")
def test_killed_worker_stops_the_learner_and_the_run_resumes(sft_dir, tmp_path):
    """SIGKILL a rollout worker mid-run: the learner stops within seconds with a line naming the worker and the
    checkpoint, nothing hangs, and --resume finishes the run from the last checkpoint. Bugs: the learner blocks
    forever in recv, a traceback instead of the message, a checkpoint lost or unusable."""
    d = copy_sft(sft_dir, tmp_path, "kill")
    flags = [
        "--out-dir",
        d,
        "--metrics-csv",
        d / "g.csv",
        "--steps",
        400,
        "--ckpt-every",
        2,
        *SMALL,
        "--rollout-workers",
        1,
    ]
    proc = torchrun(2, *flags, popen=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (d / "grpo_ckpt.pt").exists():
            time.sleep(0.2)
        assert (d / "grpo_ckpt.pt").exists(), "no checkpoint within 2 minutes"
        os.kill(worker_pid(str(d)), signal.SIGKILL)
        killed = time.time()
        _, err = proc.communicate(timeout=60)
        assert time.time() - killed < 30, "the learner took too long to stop"
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "train_grpo.py: error: rollout worker on rank 1 stopped before sending step" in err, err[-3000:]
    assert "--resume" in err
    step = load_checkpoint(d / "grpo_ckpt.pt")["step"]
    p = torchrun(2, *[str(f) for f in flags[:-1]], 1, "--steps", step + 2, "--resume")
    assert p.returncode == 0, p.stderr[-3000:]
    assert rows(d / "g.csv")[-1]["step"] == str(step + 2)


def test_a_tool_raising_in_a_worker_is_reported_with_the_prompt(tmp_path):
    """A tool that raises inside a rollout worker stops the run with exit 2 and the learner's one line naming the
    worker, the task, the prompt and the call. Bugs: the worker dies and the learner reports a lost connection (or
    hangs), the message lost between the processes."""
    from test_tools import BAD_TOOLS, fresh, tool_sft
    from test_tools import SMALL as TOOL_SMALL

    from utils.ckpt import save_checkpoint

    (tmp_path / "bad.py").write_text(BAD_TOOLS.format(body="raise RuntimeError('boom')"))
    d = fresh(tool_sft(tmp_path), tmp_path / "out")
    ck = load_checkpoint(d / "policy.pth")
    ck["task"] = "bad_tool"
    save_checkpoint(ck, d / "policy.pth")
    spec = f"{tmp_path / 'bad.py'}:Bad"
    p = torchrun(2, "--task", spec, "--steps", 3, "--out-dir", d, "--metrics-csv", d / "g.csv", *TINY, *TOOL_SMALL,
                 "--rollout-workers", 1)  # fmt: skip
    assert p.returncode != 0
    line = next(x for x in p.stderr.splitlines() if x.startswith("train_grpo.py: error:"))
    assert "rollout worker on rank 1, step 1" in line and "raised RuntimeError: boom" in line, p.stderr[-3000:]
    assert "called on prompt '" in line and spec in line

"""ppo.py against plain-loop implementations and hand-computed values; smoke, resume and bad-input runs of
train_ppo.py and rlhf_demo.py.

    python -m pytest -q tests/test_ppo.py
"""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, TINY, exact_log, run

from ppo import explained_variance, gae, masked_mean, masked_whiten, per_token_rewards, ppo_loss
from utils.ckpt import load_checkpoint

# -----------------------------------------------------------------------------
# plain-loop references: one number at a time, one completion at a time


def loop_gae(rewards, values, lengths, gamma, lam):
    """GAE by the textbook recursion, on each completion's real tokens only (a Python list per row)."""
    N, T = len(rewards), len(rewards[0])
    adv = [[0.0] * T for _ in range(N)]
    ret = [[0.0] * T for _ in range(N)]
    for i in range(N):
        L = lengths[i]
        a = 0.0
        for t in reversed(range(L)):
            v_next = values[i][t + 1] if t + 1 < L else 0.0  # terminal after the last real token
            delta = rewards[i][t] + gamma * v_next - values[i][t]
            a = delta + gamma * lam * a
            adv[i][t] = a
            ret[i][t] = a + values[i][t]
    return torch.tensor(adv), torch.tensor(ret)


def loop_ppo_loss(logp, old, values, old_values, adv, ret, lengths, clip_eps, clip_value, vf_coef):
    pg, vl, kl, clipped, ratio_sum, n = 0.0, 0.0, 0.0, 0.0, 0.0, 0
    for i in range(len(logp)):
        for t in range(lengths[i]):
            ratio = math.exp(logp[i][t] - old[i][t])
            a = adv[i][t]
            pg += max(-a * ratio, -a * min(max(ratio, 1 - clip_eps), 1 + clip_eps))
            v, v_old, r = values[i][t], old_values[i][t], ret[i][t]
            v_clip = v_old + min(max(v - v_old, -clip_value), clip_value)
            vl += 0.5 * max((v - r) ** 2, (v_clip - r) ** 2)
            kl += (ratio - 1) - math.log(ratio)
            clipped += float((ratio > 1 + clip_eps and a > 0) or (ratio < 1 - clip_eps and a < 0))
            ratio_sum += ratio
            n += 1
    real = [(values[i][t], ret[i][t]) for i in range(len(logp)) for t in range(lengths[i])]
    var = lambda xs: sum((x - sum(xs) / len(xs)) ** 2 for x in xs) / len(xs)  # population variance
    return pg / n + vf_coef * vl / n, {
        "pg_loss": pg / n,
        "value_loss": vl / n,
        "approx_kl": kl / n,
        "clip_frac": clipped / n,
        "ratio_mean": ratio_sum / n,
        "explained_var": 1 - var([r - v for v, r in real]) / var([r for _, r in real]),
    }


LENGTHS = [5, 3, 1, 4, 5, 2]


def batch(seed=0, N=6, T=5):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.arange(T)[None, :] < torch.tensor(LENGTHS[:N])[:, None]).float()
    rewards = torch.randn(N, T, generator=g) * mask
    values = torch.randn(N, T, generator=g)
    values_padded_junk = values + 100 * (1 - mask)  # padding holds garbage: it must never leak in
    return rewards, values, values_padded_junk, mask


# -----------------------------------------------------------------------------
# gae


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 0.0), (0.99, 1.0)])
def test_gae_matches_loop(gamma, lam):
    rewards, values, junk, mask = batch()
    adv, ret = gae(rewards, junk, mask, gamma=gamma, lam=lam)
    adv_ref, ret_ref = loop_gae(rewards.tolist(), values.tolist(), LENGTHS, gamma, lam)
    assert torch.allclose(adv, adv_ref, atol=1e-5)
    assert torch.allclose(ret, ret_ref, atol=1e-5)


def test_gae_lambda_one_is_monte_carlo_return():
    """gamma = lam = 1: returns are the undiscounted reward-to-go, whatever the values (the original's
    simplified PPO), and advantages are that return minus V."""
    rewards, values, junk, mask = batch(seed=1)
    adv, ret = gae(rewards, junk, mask, gamma=1.0, lam=1.0)
    for i, L in enumerate(LENGTHS):
        for t in range(L):
            mc = sum(rewards[i, k].item() for k in range(t, L))
            assert ret[i, t].item() == pytest.approx(mc, abs=1e-5)
            assert adv[i, t].item() == pytest.approx(mc - values[i, t].item(), abs=1e-5)


def test_gae_masked_tail_is_zero_and_never_bootstraps():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]])
    values = torch.tensor([[0.5, 0.5, 0.5, 7.0, 9.0]])  # the tail's values must be ignored
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert torch.equal(adv[0, 3:], torch.zeros(2)) and torch.equal(ret[0, 3:], torch.zeros(2))
    assert torch.allclose(ret[0, :3], torch.ones(3))  # reward-to-go of a single final reward of 1
    # lam = 0: one-step TD; the last real token's target is its reward alone (V after the end is 0)
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.0)
    assert torch.allclose(adv[0, :3], torch.tensor([0.0, 0.0, 0.5]))
    assert torch.allclose(ret[0, :3], torch.tensor([0.5, 0.5, 1.0]))


# -----------------------------------------------------------------------------
# rewards, whitening, explained variance


def test_per_token_rewards_hand_computed():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]])
    ref = torch.tensor([[-1.5, -2.0, -1.0], [-0.5, -1.0, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = per_token_rewards(torch.tensor([1.0, 0.1]), logp, ref, mask, kl_coef=0.1)
    assert torch.allclose(kl, torch.tensor([[0.5, 0.0, -2.0], [0.0, 0.5, 0.0]]))
    expected = torch.tensor([[-0.05, 0.0, 0.2 + 1.0], [0.0, -0.05 + 0.1, 0.0]])  # score on the last real token
    assert torch.allclose(rewards, expected)


def test_masked_whiten():
    _, values, _, mask = batch(seed=2)
    w = masked_whiten(values * 3 + 2, mask)
    real = w[mask.bool()]
    assert real.mean().abs() < 1e-5 and (real.pow(2).mean() - 1).abs() < 1e-4  # population std 1
    assert torch.equal(w[~mask.bool()], torch.zeros(int((1 - mask).sum())))
    assert torch.equal(masked_whiten(torch.ones(2, 3), torch.ones(2, 3)), torch.zeros(2, 3))  # no NaN


def test_explained_variance():
    _, values, _, mask = batch(seed=3)
    assert explained_variance(values, values, mask).item() == pytest.approx(1.0)
    assert explained_variance(torch.zeros_like(values) + 4, values, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(explained_variance(values, torch.ones_like(values), mask).item())


# -----------------------------------------------------------------------------
# ppo_loss


def test_value_clipping_hand_computed():
    """One token per row; clip_value 0.2 around V_old = 0.5. v_loss = 0.5 * max(unclipped, clipped)."""
    values = torch.tensor([[1.0], [0.0], [0.9], [0.6]], requires_grad=True)
    old_values = torch.full((4, 1), 0.5)
    returns = torch.tensor([[0.0], [1.0], [1.0], [1.0]])
    # row 0: (1-0)^2 = 1    vs clipped V 0.7: 0.49   -> 1     (moved too far, but the wrong way: full loss)
    # row 1: (0-1)^2 = 1    vs clipped V 0.3: 0.49   -> 1
    # row 2: (0.9-1)^2=0.01 vs clipped V 0.7: 0.09   -> 0.09  (moved too far towards R: clipped, no gradient)
    # row 3: (0.6-1)^2=0.16 inside the clip range    -> 0.16
    per_row = torch.tensor([1.0, 1.0, 0.09, 0.16])
    zeros = torch.zeros(4, 1)
    loss, stats = ppo_loss(zeros, zeros, values, old_values, zeros, returns, torch.ones(4, 1), vf_coef=1.0)
    assert stats["value_loss"].item() == pytest.approx(0.5 * per_row.mean().item(), abs=1e-6)
    assert stats["value_clip_frac"].item() == pytest.approx(0.75)
    loss.backward()
    # d/dV 0.5 * mean (V - R)^2 = (V - R) / 4 where the unclipped term wins, 0 where the clipped one does
    assert torch.allclose(values.grad.flatten(), torch.tensor([1.0, -1.0, 0.0, -0.4]) / 4, atol=1e-6)


def test_ratio_outside_clip_gets_no_policy_gradient():
    """Tokens whose ratio left [1 - eps, 1 + eps] in the direction the advantage pushes get zero gradient;
    the pessimistic side (ratio left the range against the advantage) keeps its full gradient."""
    ratios = torch.tensor([1.5, 0.5, 1.5, 0.5, 1.1])
    A = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0])
    old = torch.full((5, 1), -1.0)
    logp = (old + ratios.log()[:, None]).requires_grad_()
    zeros = torch.zeros(5, 1)
    loss, stats = ppo_loss(logp, old, zeros, zeros, A[:, None], zeros, torch.ones(5, 1), vf_coef=0.0)
    loss.backward()
    # unclipped: d/dlogp (-A * ratio) / n = -A * ratio / 5
    expected = torch.tensor([0.0, 0.0, 1.5, -0.5, -1.1]) / 5
    assert torch.allclose(logp.grad.flatten(), expected, atol=1e-6)
    assert stats["clip_frac"].item() == pytest.approx(2 / 5)


def test_ppo_loss_matches_loop():
    rewards, values, _, mask = batch(seed=4)
    g = torch.Generator().manual_seed(5)
    old = -torch.rand(6, 5, generator=g) * 3
    logp = old + 0.4 * torch.randn(6, 5, generator=g)  # ratios inside and outside [0.8, 1.2]
    new_values = values + 0.4 * torch.randn(6, 5, generator=g)  # some beyond the value clip
    adv, ret = gae(rewards, values, mask)
    adv = masked_whiten(adv, mask)
    loss, stats = ppo_loss(logp, old, new_values, values, adv, ret, mask, clip_eps=0.2, clip_value=0.2, vf_coef=0.1)
    ref_loss, ref_stats = loop_ppo_loss(
        logp.tolist(), old.tolist(), new_values.tolist(), values.tolist(), adv.tolist(), ret.tolist(), LENGTHS,
        0.2, 0.2, 0.1,
    )  # fmt: skip
    assert loss.item() == pytest.approx(ref_loss, abs=1e-5)
    for k, v in ref_stats.items():
        assert stats[k].item() == pytest.approx(v, abs=1e-5), k
    assert 0 < stats["clip_frac"].item() < 1  # the batch exercises both branches


def test_ppo_loss_gradcheck():
    """Autograd's gradient of ppo_loss against finite differences, in float64."""
    _, values, _, mask = batch(seed=6)
    g = torch.Generator().manual_seed(7)
    old = (-torch.rand(6, 5, generator=g) * 3).double()
    logp = (old + 0.05 * torch.randn(6, 5, generator=g, dtype=torch.float64)).requires_grad_()
    v = (values.double() + 0.05 * torch.randn(6, 5, generator=g, dtype=torch.float64)).requires_grad_()
    adv, ret = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    f = lambda lp, vv: ppo_loss(lp, old, vv, values.double(), adv, ret, mask.double())[0]
    assert torch.autograd.gradcheck(f, (logp, v))


def test_defaults():
    """The documented defaults: kl_coef 0.05, gamma 1, lam 0.95, clip 0.2 for ratio and value, vf_coef 0.1."""
    rewards, values, _, mask = batch(seed=8)
    g = torch.Generator().manual_seed(9)
    logp, ref = -torch.rand(6, 5, generator=g), -torch.rand(6, 5, generator=g)
    scores = torch.rand(6, generator=g)
    assert torch.equal(
        per_token_rewards(scores, logp, ref, mask)[0], per_token_rewards(scores, logp, ref, mask, 0.05)[0]
    )
    for a, b in zip(gae(rewards, values, mask), gae(rewards, values, mask, gamma=1.0, lam=0.95), strict=True):
        assert torch.equal(a, b)
    new_logp, new_values = logp + 0.3 * torch.randn(6, 5, generator=g), values + 0.3 * torch.randn(6, 5, generator=g)
    args = (new_logp, logp, new_values, values, rewards, rewards, mask)
    loss = ppo_loss(*args)[0]
    assert loss.item() == ppo_loss(*args, clip_eps=0.2, clip_value=0.2, vf_coef=0.1)[0].item()


def test_per_token_rewards_one_token_completion_and_integer_scores():
    """A completion that is only its end token gets its score on token 0; integer or float64 scores are
    cast to the rewards' dtype."""
    logp = torch.tensor([[-1.0, -2.0], [-1.0, -1.0]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    for scores in (torch.tensor([3, 2]), torch.tensor([3.0, 2.0], dtype=torch.float64)):
        rewards, _ = per_token_rewards(scores, logp, logp, mask)
        assert rewards.dtype == torch.float32
        assert torch.equal(rewards, torch.tensor([[3.0, 0.0], [0.0, 2.0]]))


def test_gae_makes_its_tensors_on_the_inputs_device():
    """gae's own zeros go on the inputs' device, not the default one. Here the default device is "meta",
    which, like CUDA beside CPU inputs, refuses to mix with the CPU inputs: a zeros() without device=
    would raise."""
    rewards, values, _, mask = batch()
    expected = gae(rewards, values, mask)
    with torch.device("meta"):
        adv, ret = gae(rewards, values, mask)
    assert torch.equal(adv, expected[0]) and torch.equal(ret, expected[1])


def test_masked_mean_hand_computed():
    x = torch.tensor([[1.0, 2.0, 30.0], [4.0, 50.0, 60.0]])
    assert masked_mean(x, torch.tensor([[1, 1, 0], [1, 0, 0]])).item() == pytest.approx(7 / 3)
    assert masked_mean(x, torch.tensor([[0, 0, 0], [1, 0, 0]])).item() == 4.0  # one real token: itself
    assert masked_mean(x, torch.zeros(2, 3)).item() == 0.0  # no real token: 0, not NaN


def test_explained_variance_small_targets_hand_computed():
    """Targets with a variance well below 1 (the scale of a 0/1 task score): var 0.05, residual var 0.01."""
    target = torch.tensor([[0.0, 0.2, 0.4, 0.6, 9.0]])
    pred = target + torch.tensor([[0.1, -0.1, 0.1, -0.1, -5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])  # the last column is padding
    assert explained_variance(pred, target, mask).item() == pytest.approx(1 - 0.01 / 0.05, abs=1e-5)
    assert explained_variance(target, target, mask).item() == pytest.approx(1.0)


def test_clip_fracs_hand_computed():
    """clip_frac counts the tokens whose ratio left the closed range [1 - eps, 1 + eps] in the direction
    their advantage pushes (no policy gradient); a token with A = 0 or exactly on a boundary is not one.
    value_clip_frac counts |V - V_old| > clip_value, strictly."""
    ratios = [0.5, 1.5, 0.5, 1.5, 0.75, 1.25, 0.5, 1.5]
    A = torch.tensor([[0.0, 0.0, 0.5, -0.5, -1.0, 1.0, -1.0, 1.0]])
    logp = torch.tensor([[exact_log(r) for r in ratios]], requires_grad=True)
    old_values = torch.full((1, 8), 0.5)
    values = torch.tensor([[0.5, 0.5, 0.75, 0.25, 1.0, 0.0, 0.5, 0.5]])  # 0.25 away: on the boundary
    zeros = torch.zeros(1, 8)
    loss, stats = ppo_loss(logp, zeros, values, old_values, A, zeros, torch.ones(1, 8), clip_eps=0.25, clip_value=0.25)
    loss.backward()
    assert stats["clip_frac"].item() == pytest.approx(2 / 8)
    assert stats["value_clip_frac"].item() == pytest.approx(2 / 8)
    expected = [-a * r / 8 for r, a in zip(ratios, A[0].tolist(), strict=True)]
    expected[6:] = [0.0, 0.0]  # the two clipped tokens
    assert torch.allclose(logp.grad.flatten(), torch.tensor(expected), atol=1e-7)


# -----------------------------------------------------------------------------
# the driver and the demo, as a user runs them

SMALL = ["--batch-size", 4, "--group-size", 4, "--num-minibatches", 2, "--eval-every", 2, "--no-progress", *TINY]


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_ppo_arithmetic_smoke(sft_dir):
    log = sft_dir / "ppo.csv"
    p = run("train_ppo.py", "--steps", 3, "--out-dir", sft_dir, "--log", log, *SMALL)
    assert p.returncode == 0, p.stderr
    r = rows(log)
    assert [x["step"] for x in r] == ["0", "1", "2", "3"]  # step 0: the SFT policy's evaluation
    assert r[0]["eval_acc"] != "" and r[0]["kl"] == ""
    r = r[1:]
    for col in ["mean_r", "kl", "entropy", "clip_frac", "loss", "grad_norm", "value_loss", "explained_var",
                "approx_kl", "r_exact", "r_format", "skipped"]:  # fmt: skip
        assert r[-1][col] != "", col
    assert float(r[0]["kl"]) == 0.0  # step 1 samples from the SFT policy, which is pi_ref
    assert r[1]["eval_acc"] != "" and r[0]["eval_acc"] == ""
    s = json.load(open(sft_dir / "ppo_summary.json"))
    assert 0 <= s["final_eval"]["eval_acc"] <= 1 and s["samples_seen"] == 3 * 16
    assert s["memory"]["value_params_mib"] > 0
    assert (sft_dir / "ppo_ckpt.pt").exists() and "--- step 2" in open(sft_dir / "ppo_samples.txt").read()


def test_train_ppo_shakespeare_smoke(tmp_path):
    small_text = tmp_path / "s.txt"
    small_text.write_text(open(os.path.join(ROOT, "data", "tinyshakespeare.txt")).read()[:20000])
    p = run(
        "train_ppo.py", "--task", "shakespeare", "--reward", "rule", "--data", small_text, "--steps", 2, "--sft-steps", 5,
        "--gamma", 1, "--gae-lambda", 1, "--out-dir", tmp_path, "--log", tmp_path / "s.csv", *SMALL,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    r = rows(tmp_path / "s.csv")
    assert len(r) == 3 and float(r[1]["len_mean"]) == 32.0 and r[2]["eval_r"] != ""


def test_train_ppo_kill_and_resume_matches_uninterrupted(sft_dir, tmp_path):
    """SIGKILL mid-run, --resume: the CSV holds steps 1..N once each and the parameters (policy and value
    model) equal an uninterrupted run's bitwise (every draw of step s comes from a generator seeded by
    (seed, s); the checkpoint holds both models, both Adam states and the step). Then the checkpoint is
    refused, in one line with exit 2, under mismatched model flags and once truncated."""
    steps = 24
    flags = ["--steps", steps, "--ckpt-every", 4, *SMALL]
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    (ref_dir / "policy.pth").write_bytes((sft_dir / "policy.pth").read_bytes())
    p = run("train_ppo.py", "--out-dir", ref_dir, "--log", ref_dir / "p.csv", *flags)
    assert p.returncode == 0, p.stderr

    log = sft_dir / "p.csv"
    cmd = [sys.executable, "train_ppo.py", "--out-dir", str(sft_dir), "--log", str(log), *map(str, flags)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for a checkpoint and a few logged steps past it
        if os.path.exists(log) and len(rows(log)) >= 7:  # step 0 and 6 steps
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 7 <= len(rows(log)) < steps + 1

    p = run("train_ppo.py", "--out-dir", sft_dir, "--log", log, "--resume", *flags)
    assert p.returncode == 0, p.stderr
    assert "resumed from" in p.stdout
    assert [int(x["step"]) for x in rows(log)] == list(range(0, steps + 1))
    a, b = load_checkpoint(ref_dir / "ppo_ckpt.pt"), load_checkpoint(sft_dir / "ppo_ckpt.pt")
    assert a["step"] == b["step"] == steps
    for model in ("policy", "value_model"):
        for k in a[model]:
            assert torch.equal(a[model][k], b[model][k]), (model, k)
    strip = lambda rs: [{k: v for k, v in x.items() if k not in ("time_s", "tokens_per_s")} for x in rs]
    assert strip(rows(ref_dir / "p.csv")) == strip(rows(log))
    sa, sb = (json.load(open(d / "ppo_summary.json")) for d in (ref_dir, sft_dir))
    assert sa["sft_eval"] == sb["sft_eval"] and sa["final_eval"] == sb["final_eval"]  # the summary too

    wider = [*SMALL[:-6], "--n-layer", 2, "--n-head", 2, "--n-embd", 32]
    p = run("train_ppo.py", "--steps", 30, "--out-dir", ref_dir, "--log", log, "--resume", *wider)
    assert p.returncode == 2 and "does not match the flags: n_layer=1 (flags: 2)" in p.stderr, p.stderr
    data = (ref_dir / "ppo_ckpt.pt").read_bytes()
    (ref_dir / "ppo_ckpt.pt").write_bytes(data[: len(data) // 2])
    p = run("train_ppo.py", "--steps", 30, "--out-dir", ref_dir, "--log", log, "--resume", *SMALL)
    assert p.returncode == 2 and "corrupt or truncated" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_train_ppo_nan_steps_are_skipped_then_stop(sft_dir):
    """A NaN step is skipped and logged; a streak of --max-bad-steps stops the run (exit 1, one line)
    and leaves the last good checkpoint."""
    log = sft_dir / "p.csv"
    flags = ["--steps", 6, "--ckpt-every", 1, "--max-bad-steps", 2, "--debug-nan-steps", 2, 4, 5]
    p = run("train_ppo.py", "--out-dir", sft_dir, "--log", log, *flags, *SMALL)
    assert p.returncode == 1 and "2 steps in a row" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    r = rows(log)[1:]  # after step 0, the SFT policy's evaluation
    assert [x["skipped"] for x in r] == ["0", "1", "0", "1", "1"]
    assert r[1]["loss"] == "" and r[1]["grad_norm"] == "" and r[2]["loss"] != ""  # no fake numbers
    ck = load_checkpoint(sft_dir / "ppo_ckpt.pt")
    assert ck["step"] == 3 and all(torch.isfinite(v).all() for v in ck["policy"].values())


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--lr", "0"], "--lr: must be > 0"),
        (["--clip-value", "-1"], "--clip-value: must be > 0"),
        (["--num-iterations", "0"], "--num-iterations: must be >= 1"),
        (["--num-minibatches", "3"], "does not divide"),
        (["--task", "chess"], "unknown --task 'chess'"),
        (["--resume"], "no checkpoint"),
        (["--task", "shakespeare", "--data", "/nonexistent/text.txt"], "/nonexistent/text.txt not found"),
    ],
)
def test_train_ppo_bad_input_exits_2(tmp_path, flags, message):
    p = run("train_ppo.py", "--out-dir", tmp_path, "--log", tmp_path / "p.csv", "--steps", 1, *flags)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_rlhf_demo_smoke(tmp_path):
    p = run("rlhf_demo.py", "--tiny", "--out-dir", tmp_path)
    assert p.returncode == 0, p.stderr
    for method in ("GRPO", "PPO"):
        assert method in p.stdout
    assert "reward before" in p.stdout

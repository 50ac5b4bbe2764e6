"""Every logged number means what utils/metrics.py says, and each option does what it claims.

Most tests read train_grpo.py's --debug-trace: per update, how far pi_theta was from pi_old and the
gradient before clipping; per step, the rewards of the first draw and of the batch trained on.
"""

import csv
import json

import pytest
import torch
from conftest import TINY, run

from model import GPT, GPTConfig, completion_logprobs
from utils.ckpt import load_checkpoint
from utils.common import console

SMALL = ["--batch-size", 4, "--group-size", 4, "--eval-every", 2, "--no-progress", *TINY]
G = 4


def all_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def rows(path):
    """The RL steps' rows (after step 0, the starting policy's evaluation)."""
    r = all_rows(path)
    assert r[0]["step"] == "0", r[0]
    return r[1:]


def trace_of(path):
    t = torch.load(path, weights_only=True)
    return [x for x in t if "it" in x], [x for x in t if "r_trained" in x]  # (updates, steps)


def test_resume_reports_the_sft_policy_as_sft(sft_dir):
    """grpo_summary.json's sft_eval is the SFT policy's, also when the run was resumed from step 4."""
    log, flags = sft_dir / "g.csv", ["--lr", 1e-2, "--ckpt-every", 2, *SMALL]
    assert run("train_grpo.py", "--steps", 4, "--out-dir", sft_dir, "--log", log, *flags).returncode == 0
    first = json.load(open(sft_dir / "grpo_summary.json"))
    assert first["final_eval"] != first["sft_eval"]  # the policy at step 4 is not the SFT policy
    p = run("train_grpo.py", "--steps", 6, "--out-dir", sft_dir, "--log", log, "--resume", *flags)
    assert p.returncode == 0, p.stderr
    resumed = json.load(open(sft_dir / "grpo_summary.json"))
    assert resumed["sft_eval"] == first["sft_eval"]
    shown = console(first["sft_eval"])  # the console rounds, the summary keeps every digit
    assert f"held-out: {shown}" in p.stdout and f"SFT {shown} -> GRPO" in p.stdout


def test_mu_gt_1_ratio_is_against_pi_old_and_the_clip_acts(sft_dir):
    """With mu = 2: the first update of every step sees pi_theta == pi_old (ratio 1, nothing clipped);
    the second sees the moved policy, and with a large lr the clip acts."""
    tr = sft_dir / "trace.pt"
    flags = ["--steps", 4, "--num-iterations", 2, "--lr", 1e-2, "--debug-trace", tr, *SMALL]
    p = run("train_grpo.py", "--out-dir", sft_dir, "--log", sft_dir / "g.csv", *flags)
    assert p.returncode == 0, p.stderr
    updates, _ = trace_of(tr)
    assert [(u["step"], u["it"]) for u in updates] == [(s, i) for s in (1, 2, 3, 4) for i in (0, 1)]
    for u in updates:
        if u["it"] == 0:  # ratio == 1 exactly: the policy has not moved since it sampled
            assert u["max_abs_logratio"] < 1e-6 and u["clip_frac"] == 0, u
    assert all(u["max_abs_logratio"] > 1e-3 for u in updates if u["it"] == 1)
    assert any(u["clip_frac"] > 0 for u in updates if u["it"] == 1)
    assert any(float(r["clip_frac"]) > 0 for r in rows(sft_dir / "g.csv"))


def test_mu_1_never_clips(sft_dir):
    p = run("train_grpo.py", "--steps", 3, "--lr", 1e-2, "--out-dir", sft_dir, "--log", sft_dir / "g.csv", *SMALL)
    assert p.returncode == 0, p.stderr
    assert all(float(r["clip_frac"]) == 0 for r in rows(sft_dir / "g.csv"))


def test_dynamic_sampling_trains_only_on_informative_groups(sft_dir):
    tr, log = sft_dir / "trace.pt", sft_dir / "g.csv"
    flags = ["--steps", 6, "--dynamic-sampling", "--debug-trace", tr, *SMALL]
    p = run("train_grpo.py", "--out-dir", sft_dir, "--log", log, *flags)
    assert p.returncode == 0, p.stderr
    _, steps = trace_of(tr)
    assert any((s["r_first"].view(-1, G).std(dim=1) == 0).any() for s in steps), "nothing to drop: a weak test"
    for s, row in zip(steps, rows(log), strict=True):
        informative = s["r_trained"].view(-1, G).std(dim=1) > 0  # (groups trained on,)
        if informative.any():  # else the fallback: no informative group in any draw, advantages all 0
            assert informative.all(), s
        assert int(row["kept_groups"]) == int(informative.sum()) == s["kept_groups"]
        # mean_r, std_r: the first, unfiltered draw
        assert float(row["mean_r"]) == pytest.approx(s["r_first"].mean().item(), abs=1e-5)
        assert float(row["std_r"]) == pytest.approx(s["r_first"].std().item(), abs=1e-5)


def test_dynamic_sampling_with_no_informative_group_trains_on_the_kl_alone(sft_dir):
    """A one-token completion can never be an answer: every reward is 0, no draw has an informative
    group, the step falls back to the first draw with advantages 0, and kept_groups says 0."""
    tr, log = sft_dir / "trace.pt", sft_dir / "g.csv"
    flags = ["--steps", 2, "--dynamic-sampling", "--max-new-tokens", 1, "--debug-trace", tr, *SMALL]
    p = run("train_grpo.py", "--out-dir", sft_dir, "--log", log, *flags)
    assert p.returncode == 0, p.stderr
    _, steps = trace_of(tr)
    for s, row in zip(steps, rows(log), strict=True):
        assert row["kept_groups"] == "0" and float(row["mean_r"]) == 0 and float(row["frac_zero_std"]) == 1
        assert torch.equal(s["r_trained"], torch.zeros(4 * G))  # the fallback: B groups, all advantages 0
        assert float(row["len_mean"]) == 1 and row["loss"] != ""  # it still trained (on the KL)


def test_lr_schedule_hand_computed():
    """Warmup to the peak over round(frac * total) steps, cosine to peak/10 at the last step."""
    from utils.common import lr_at

    peak, total = 1e-3, 100  # warmup: 5 steps
    assert lr_at(1, total, peak, 0.05) == pytest.approx(2e-4)
    assert lr_at(5, total, peak, 0.05) == pytest.approx(1e-3)  # end of warmup: the peak
    assert lr_at(total, total, peak, 0.05) == pytest.approx(1e-4)  # the floor, peak / 10
    mid = 5 + (total - 5) / 2  # halfway through the decay: cos = 0, halfway between peak and floor
    assert lr_at(mid, total, peak, 0.05) == pytest.approx(5.5e-4)
    assert lr_at(1, total, peak, 0.0) == pytest.approx(1e-3)  # no warmup: one step at the peak
    assert all(lr_at(s, total, peak, 0.05, "constant") == peak for s in (1, 50, total))
    lrs = [lr_at(s, total, peak, 0.05) for s in range(5, total + 1)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))  # decays monotonically


def test_without_dynamic_sampling_kept_groups_counts_informative_groups(sft_dir):
    log = sft_dir / "g.csv"
    assert run("train_grpo.py", "--steps", 3, "--out-dir", sft_dir, "--log", log, *SMALL).returncode == 0
    for r in rows(log):
        assert int(r["kept_groups"]) == round(4 * (1 - float(r["frac_zero_std"])))


@pytest.mark.parametrize("script", ["train_grpo.py", "train_ppo.py"])
def test_nan_in_a_later_update_undoes_the_whole_step(sft_dir, tmp_path, script):
    """A NaN at the second update of step 2 leaves the state as a NaN at its first update does: the
    step's earlier update is undone, parameters and Adam state alike, and the step is logged as skipped."""
    extra = ["--num-iterations", 2] if script == "train_grpo.py" else ["--num-minibatches", 2]
    name = "grpo" if script == "train_grpo.py" else "ppo"
    ends = []
    for update in (0, 1):
        d = tmp_path / f"u{update}"
        d.mkdir()
        (d / "policy.pth").write_bytes((sft_dir / "policy.pth").read_bytes())
        flags = ["--steps", 3, "--lr", 1e-2, "--debug-nan-steps", 2, "--debug-nan-update", update, *extra, *SMALL]
        p = run(script, "--out-dir", d, "--log", d / "g.csv", *flags)
        assert p.returncode == 0, p.stderr
        r = rows(d / "g.csv")
        assert [x["skipped"] for x in r] == ["0", "1", "0"] and r[1]["loss"] == "" and r[1]["grad_norm"] == ""
        ends.append(load_checkpoint(d / f"{name}_ckpt.pt"))
    nets = ["policy", "value_model"] if name == "ppo" else ["policy"]
    for net in nets:
        for k in ends[0][net]:
            assert torch.equal(ends[0][net][k], ends[1][net][k]), (net, k)
    for opt in ["optimizer", "value_optimizer"] if name == "ppo" else ["optimizer"]:
        a, b = ends[0][opt]["state"], ends[1][opt]["state"]
        assert a.keys() == b.keys()
        assert all(torch.equal(a[i][k], b[i][k]) for i in a for k in ("step", "exp_avg", "exp_avg_sq")), opt


@pytest.mark.parametrize("script", ["train_grpo.py", "train_ppo.py"])
def test_top_k_is_refused_for_training(tmp_path, script):
    p = run(script, "--out-dir", tmp_path, "--log", tmp_path / "g.csv", "--steps", 1, "--top-k", 5)
    assert p.returncode == 2 and "--top-k is not supported for training" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_sampled_and_recomputed_logprobs_agree_and_why_top_k_cannot():
    """The driver's sampling (temperature, no top-k) returns the log-probs the loss recomputes. Under
    top-k the sampled distribution is a truncated one: its log-probs are not the full softmax's."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=24, n_layer=2, n_head=2, n_embd=16))
    idx = torch.randint(0, 10, (6, 5))
    u = torch.rand(6, 8, generator=torch.Generator().manual_seed(1))
    out, lp = model.generate(idx, 8, temperature=0.7, uniforms=u)
    recomputed, _ = completion_logprobs(model, torch.cat([idx, out], 1), 5, 0.7)
    torch.testing.assert_close(recomputed, lp, atol=1e-5, rtol=1e-5)
    out, lp = model.generate(idx, 8, temperature=0.7, top_k=3, uniforms=u)
    recomputed, _ = completion_logprobs(model, torch.cat([idx, out], 1), 5, 0.7)
    assert (lp - recomputed).abs().max() > 1e-2  # the truncated distribution puts more mass on each kept token


def test_step_zero_row_and_beta_zero(sft_dir):
    """The CSV starts with step 0, the SFT policy's evaluation (the summary's sft_eval); with --beta 0 no
    reference forward runs and the kl column is empty, while the same run at beta 0.04 logs a KL."""
    log = sft_dir / "b0.csv"
    p = run("train_grpo.py", "--steps", 2, "--beta", 0, "--out-dir", sft_dir, "--log", log, *SMALL)
    assert p.returncode == 0, p.stderr
    r = all_rows(log)
    assert [x["step"] for x in r] == ["0", "1", "2"]
    sft_eval = json.load(open(sft_dir / "grpo_summary.json"))["sft_eval"]
    assert float(r[0]["eval_acc"]) == pytest.approx(sft_eval["eval_acc"]) and r[0]["mean_r"] == ""
    assert [x["kl"] for x in r[1:]] == ["", ""] and r[1]["loss"] != ""
    assert run("train_grpo.py", "--steps", 2, "--out-dir", sft_dir, "--log", log, *SMALL).returncode == 0
    assert all(x["kl"] != "" for x in rows(log)[1:])

"""Subprocess smoke runs of train_grpo.py and plot.py with tiny settings, determinism, and DDP."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY, run

SMALL = ["--batch-size", 4, "--group-size", 4, "--eval-every", 2, "--no-progress", *TINY]


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_arithmetic_smoke(sft_dir):
    log = sft_dir / "grpo.csv"
    p = run("train_grpo.py", "--steps", 3, "--out-dir", sft_dir, "--log", log, *SMALL)
    assert p.returncode == 0, p.stderr
    r = rows(log)
    assert [x["step"] for x in r] == ["0", "1", "2", "3"]  # step 0: the SFT policy's evaluation
    r = r[1:]
    for col in [
        "mean_r",
        "std_r",
        "frac_zero_std",
        "kl",
        "entropy",
        "clip_frac",
        "loss",
        "grad_norm",
        "len_mean",
        "time_s",
        "tokens_per_s",
        "r_exact",
        "r_format",
    ]:
        assert r[-1][col] != "", col
    assert r[1]["eval_acc"] != "" and r[0]["eval_acc"] == ""
    summary = json.load(open(sft_dir / "grpo_summary.json"))
    assert 0 <= summary["final_eval"]["eval_acc"] <= 1
    assert "--- step 2" in open(sft_dir / "grpo_samples.txt").read()
    assert (sft_dir / "grpo_ckpt.pt").exists()
    # the console rounds (0.1, not 0.10000000000000088; the CSV keeps every digit): eval lines and summary
    assert re.search(r"^step 2: mean_r \S+ kl \S+ entropy \S+ loss \S+ acc \S+$", p.stdout, re.M), p.stdout
    digits = [re.sub(r"\.", "", m).strip("0") for m in re.findall(r"\d+\.\d+", p.stdout)]  # significant
    assert digits and max(map(len, digits)) <= 4, p.stdout  # 3, the loss 4; float noise has ~17


def test_options_smoke(sft_dir):
    """mu > 1, dynamic sampling, dr_grpo, no std scaling and clip-higher together run and log every step
    (what each option does is asserted in test_logged_numbers.py)."""
    p = run(
        "train_grpo.py", "--steps", 2, "--out-dir", sft_dir, "--log", sft_dir / "g.csv", "--num-iterations", 2,
        "--dynamic-sampling", "--loss-type", "dr_grpo", "--scale", "none", "--clip-eps-high", 0.28, *SMALL,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert [r["skipped"] for r in rows(sft_dir / "g.csv")] == ["", "0", "0"]  # step 0 has no update


def test_shakespeare_smoke(tmp_path):
    small_text = tmp_path / "s.txt"
    small_text.write_text(open(os.path.join(ROOT, "data", "tinyshakespeare.txt")).read()[:20000])
    p = run(
        "train_grpo.py", "--task", "shakespeare", "--reward", "rule", "--data", small_text, "--steps", 2, "--sft-steps", 5,
        "--out-dir", tmp_path, "--log", tmp_path / "s.csv", *SMALL,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    r = rows(tmp_path / "s.csv")
    assert len(r) == 3 and float(r[1]["len_mean"]) == 32.0  # step 0, then fixed-length completions


def test_same_seed_same_numbers(sft_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(sft_dir, other)
    for d in (sft_dir, other):
        p = run("train_grpo.py", "--steps", 3, "--out-dir", d, "--log", d / "g.csv", *SMALL)
        assert p.returncode == 0, p.stderr
    strip = lambda rs: [{k: v for k, v in x.items() if k not in ("time_s", "tokens_per_s")} for x in rs]
    assert strip(rows(sft_dir / "g.csv")) == strip(rows(other / "g.csv"))


def test_plot_smoke(sft_dir):
    log = sft_dir / "grpo.csv"
    assert run("train_grpo.py", "--steps", 2, "--out-dir", sft_dir, "--log", log, *SMALL).returncode == 0
    for seed in (1, 2):
        shutil.copy(log, sft_dir / f"run_seed{seed}.csv")
    out = sft_dir / "p.png"
    p = run(
        "plot.py",
        "--metric",
        "mean_r",
        log,
        sft_dir / "run_seed1.csv",
        sft_dir / "run_seed2.csv",
        "-o",
        out,
        "--smooth",
        2,
    )
    assert p.returncode == 0, p.stderr
    assert out.stat().st_size > 1000
    p = run("plot.py", "--metric", "mean_r", "--x", "kl", log, "-o", sft_dir / "k.png")
    assert p.returncode == 0, p.stderr
    p = run("plot.py", "--metric", "eval_acc,len_mean", log, "-o", sft_dir / "two.png")  # two panels
    assert p.returncode == 0 and (sft_dir / "two.png").stat().st_size > 1000, p.stderr
    p = run("plot.py", "--metric", "eval_acc,nope", log, "-o", sft_dir / "bad.png")
    assert p.returncode == 2 and "unknown metric 'nope'" in p.stderr


# every --loss-type that must match one process (bnpo is a per-rank token mean by definition, see grpo.py)
# and every --scale at least once; mu = 2 takes the pi_old path under DDP
DDP_CASES = [("grpo", "group", 1), ("dapo", "batch", 2), ("dr_grpo", "none", 1)]


@pytest.mark.parametrize("loss_type,scale,mu", DDP_CASES)
def test_ddp_gradients_match_single_process(sft_dir, tmp_path, loss_type, scale, mu):
    """torchrun with 2 gloo ranks computes the same gradient, before clipping and Adam, as 1 process on
    the same global batch, and logs the same numbers.

    Gradients, not parameters: Adam and gradient clipping are blind to a uniform scale of the loss, so a
    missing `loss * world` (dapo) would leave the parameters nearly equal. What makes the gradients equal:
    every random draw of a step comes from a generator seeded by (seed, step) for the *global* batch and
    each rank takes its slice, rewards are all-gathered before the advantages, and DDP averages the
    gradients of equal-sized local means (dapo: local sums over the global count, times world).
    """
    ddp_dir = tmp_path / "ddp"
    shutil.copytree(sft_dir, ddp_dir)
    flags = ["--steps", 2, "--loss-type", loss_type, "--scale", scale, "--num-iterations", mu, "--device", "cpu"]
    flags += ["--lr", 1e-2, *SMALL]
    p = run(
        "train_grpo.py", "--out-dir", sft_dir, "--log", sft_dir / "g.csv", "--debug-trace", sft_dir / "t.pt", *flags
    )
    assert p.returncode == 0, p.stderr
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train_grpo.py"]
    cmd += ["--out-dir", str(ddp_dir), "--metrics-csv", str(ddp_dir / "g.csv"), "--debug-trace", str(ddp_dir / "t.pt")]
    p = subprocess.run(cmd + [str(f) for f in flags], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    one = [x for x in torch.load(sft_dir / "t.pt", weights_only=True) if "grads" in x]
    two = [x for x in torch.load(ddp_dir / "t.pt", weights_only=True) if "grads" in x]
    assert [(x["step"], x["it"]) for x in one] == [(x["step"], x["it"]) for x in two] and len(one) == 2 * mu
    for a, b in zip(one, two, strict=True):
        for k, g in a["grads"].items():
            assert g.abs().max() > 0, f"{k} has no gradient"
            torch.testing.assert_close(b["grads"][k], g, rtol=1e-4, atol=1e-5 * g.abs().max().item(), msg=k)
    r1, r2 = rows(sft_dir / "g.csv")[1:], rows(ddp_dir / "g.csv")  # after step 0, the SFT policy's row
    assert [x["step"] for x in r2] == ["0", "1", "2"]  # only rank 0 logs
    r2 = r2[1:]
    for x, y in zip(r1, r2, strict=True):  # every column is the global batch's, not a mean of per-rank figures
        for col in ("mean_r", "std_r", "frac_zero_std", "kl", "entropy", "clip_frac", "len_mean", "r_exact"):
            assert float(x[col]) == pytest.approx(float(y[col]), rel=1e-4, abs=1e-6), col
        assert x["kept_groups"] == y["kept_groups"] and x["lr"] == y["lr"]

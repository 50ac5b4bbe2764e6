"""Subprocess smoke runs of train_grpo.py and plot.py with tiny settings, determinism, and DDP."""

import csv
import json
import os
import shutil
import subprocess
import sys

import torch
from conftest import ROOT, TINY, run

from utils.ckpt import load_checkpoint

SMALL = ["--batch-size", 4, "--group-size", 4, "--eval-every", 2, "--no-progress", *TINY]


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_arithmetic_smoke(sft_dir):
    log = sft_dir / "grpo.csv"
    p = run("train_grpo.py", "--steps", 3, "--out-dir", sft_dir, "--log", log, *SMALL)
    assert p.returncode == 0, p.stderr
    r = rows(log)
    assert [x["step"] for x in r] == ["1", "2", "3"]
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


def test_options_smoke(sft_dir):
    """mu > 1, dynamic sampling, the other loss types and scales all run."""
    p = run(
        "train_grpo.py", "--steps", 2, "--out-dir", sft_dir, "--log", sft_dir / "g.csv", "--num-iterations", 2,
        "--dynamic-sampling", "--loss-type", "dr_grpo", "--scale", "none", "--top-k", 5, "--clip-eps-high", 0.28, *SMALL,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert len(rows(sft_dir / "g.csv")) == 2


def test_shakespeare_smoke(tmp_path):
    small_text = tmp_path / "s.txt"
    small_text.write_text(open(os.path.join(ROOT, "data", "tinyshakespeare.txt")).read()[:20000])
    p = run(
        "train_grpo.py", "--task", "shakespeare", "--reward", "rule", "--data", small_text, "--steps", 2, "--sft-steps", 5,
        "--out-dir", tmp_path, "--log", tmp_path / "s.csv", *SMALL,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    r = rows(tmp_path / "s.csv")
    assert len(r) == 2 and float(r[0]["len_mean"]) == 32.0  # fixed-length completions


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


def test_ddp_matches_single_process(sft_dir, tmp_path):
    """torchrun with 2 gloo ranks ends with the same parameters as 1 process on the same global batch.

    The invariant we can guarantee: every random draw of a step comes from a generator seeded by (seed,
    step) for the *global* batch and each rank takes its slice, rewards are all-gathered before the
    advantages, and DDP averages gradients of equal-sized local means. So the two runs compute the same
    update up to float summation order (allclose, not bitwise).
    """
    ddp_dir = tmp_path / "ddp"
    shutil.copytree(sft_dir, ddp_dir)
    flags = ["--steps", 3, "--loss-type", "dapo", "--scale", "batch", "--device", "cpu", *SMALL]
    p = run("train_grpo.py", "--out-dir", sft_dir, "--log", sft_dir / "g.csv", *flags)
    assert p.returncode == 0, p.stderr
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train_grpo.py"]
    p = subprocess.run(
        cmd + ["--out-dir", str(ddp_dir), "--metrics-csv", str(ddp_dir / "g.csv"), *map(str, flags)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    one = load_checkpoint(sft_dir / "grpo_ckpt.pt")["policy"]
    two = load_checkpoint(ddp_dir / "grpo_ckpt.pt")["policy"]
    start = load_checkpoint(sft_dir / "policy.pth")["model"]
    for k in one:
        assert not torch.equal(one[k], start[k]) or k.endswith("wpe.weight"), f"{k} did not train"
        assert torch.allclose(one[k], two[k], atol=1e-5), k
    r1, r2 = rows(sft_dir / "g.csv"), rows(ddp_dir / "g.csv")
    assert [x["step"] for x in r2] == ["1", "2", "3"]  # only rank 0 logs
    assert abs(float(r1[0]["mean_r"]) - float(r2[0]["mean_r"])) < 1e-6

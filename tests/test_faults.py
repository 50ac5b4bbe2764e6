"""Nothing lost, nothing silent: kill-and-resume, corrupt and malicious checkpoints, NaN steps, bad input.

The resume invariant we guarantee on CPU is *bitwise* equality: the checkpoint holds parameters, Adam
state and step, and every random draw of step s comes from a generator seeded by (seed, s), so the
steps after a resume see exactly the prompts and random numbers the uninterrupted run saw.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, TINY, run

from utils.ckpt import CheckpointError, load_checkpoint, save_checkpoint

SMALL = ["--batch-size", 4, "--group-size", 4, "--eval-every", 5, "--no-progress", *TINY]


def steps_in(path):
    with open(path, newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps[:1] in ([], [0])  # the starting policy's row, once
    return steps[1:]


def test_kill_and_resume_matches_uninterrupted(sft_dir, tmp_path):
    steps = 60
    flags = ["--steps", steps, "--ckpt-every", 4, *SMALL]
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    (ref_dir / "policy.pth").write_bytes((sft_dir / "policy.pth").read_bytes())
    p = run("train_grpo.py", "--out-dir", ref_dir, "--log", ref_dir / "g.csv", *flags)
    assert p.returncode == 0, p.stderr

    log = sft_dir / "g.csv"
    cmd = [sys.executable, "train_grpo.py", "--out-dir", str(sft_dir), "--log", str(log), *map(str, flags)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for a checkpoint and a few logged steps past it
        if os.path.exists(log) and len(steps_in(log)) >= 10:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = len(steps_in(log))
    assert 10 <= killed_at < steps

    p = run("train_grpo.py", "--out-dir", sft_dir, "--log", log, "--resume", *flags)
    assert p.returncode == 0, p.stderr
    assert "resumed from" in p.stdout
    assert steps_in(log) == list(range(1, steps + 1))  # no repeated, no missing step

    a = load_checkpoint(ref_dir / "grpo_ckpt.pt")
    b = load_checkpoint(sft_dir / "grpo_ckpt.pt")
    assert a["step"] == b["step"] == steps
    for k in a["policy"]:
        assert torch.equal(a["policy"][k], b["policy"][k]), k
    with open(ref_dir / "g.csv") as f1, open(log) as f2:  # the metrics agree too (not the timings)
        strip = lambda rs: [{k: v for k, v in r.items() if k not in ("time_s", "tokens_per_s")} for r in rs]
        assert strip(csv.DictReader(f1)) == strip(csv.DictReader(f2))
    sa, sb = (json.load(open(d / "grpo_summary.json")) for d in (ref_dir, sft_dir))
    assert sa["sft_eval"] == sb["sft_eval"] and sa["final_eval"] == sb["final_eval"]  # the summary too


def test_atomic_save_leaves_no_partial_file(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"x": torch.ones(3)}, path)
    assert os.listdir(tmp_path) == ["c.pt"]  # the temporary file was renamed, nothing left behind
    assert torch.equal(load_checkpoint(path)["x"], torch.ones(3))


def test_truncated_checkpoint_clear_error(sft_dir):
    data = (sft_dir / "policy.pth").read_bytes()
    (sft_dir / "policy.pth").write_bytes(data[: len(data) // 2])
    p = run("train_grpo.py", "--steps", 1, "--out-dir", sft_dir, "--log", sft_dir / "g.csv", *SMALL)
    assert p.returncode == 2
    assert "corrupt or truncated" in p.stderr and len(p.stderr.strip().splitlines()) == 1


class Payload:
    """Unpickling this calls os.system: what a malicious checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_is_refused_and_does_not_run(sft_dir, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model": Payload(marker)}, sft_dir / "policy.pth")
    p = run("train_grpo.py", "--steps", 1, "--out-dir", sft_dir, "--log", sft_dir / "g.csv", *SMALL)
    assert p.returncode == 2
    assert "refused" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        load_checkpoint(sft_dir / "policy.pth")
    assert not marker.exists()


def test_nan_step_is_skipped_and_counted(sft_dir):
    log = sft_dir / "g.csv"
    p = run("train_grpo.py", "--steps", 4, "--out-dir", sft_dir, "--log", log, "--debug-nan-steps", 2, *SMALL)
    assert p.returncode == 0, p.stderr
    with open(log) as f:
        r = list(csv.DictReader(f))[1:]  # after step 0, the SFT policy's evaluation
    assert [x["skipped"] for x in r] == ["0", "1", "0", "0"]
    assert r[1]["loss"] == "" and r[1]["grad_norm"] == ""  # no fake numbers for the skipped update
    ck = load_checkpoint(sft_dir / "grpo_ckpt.pt")
    assert all(torch.isfinite(v).all() for v in ck["policy"].values())


def test_nan_streak_stops_without_poisoned_checkpoint(sft_dir):
    log = sft_dir / "g.csv"
    flags = ["--steps", 6, "--ckpt-every", 1, "--max-bad-steps", 3, "--debug-nan-steps", 2, 3, 4, 5, 6]
    p = run("train_grpo.py", "--out-dir", sft_dir, "--log", log, *flags, *SMALL)
    assert p.returncode == 1
    assert "3 steps in a row" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert load_checkpoint(sft_dir / "grpo_ckpt.pt")["step"] == 1  # the last good step
    assert steps_in(log) == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--group-size", "1"], "--group-size: must be >= 2"),
        (["--lr", "0"], "--lr: must be > 0"),
        (["--lr", "-0.001"], "--lr: must be > 0"),
        (["--clip-eps", "0"], "--clip-eps: must be > 0"),
        (["--grad-clip", "-1"], "--grad-clip: must be > 0"),
        (["--num-iterations", "0"], "--num-iterations: must be >= 1"),
        (["--task", "chess"], "unknown --task 'chess'"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
        (["--resume"], "no checkpoint"),
        (["--task", "shakespeare", "--data", "/nonexistent/text.txt"], "/nonexistent/text.txt not found"),
        (["--max-new-tokens", "40"], "exceeds the model's block_size"),
        (["--n-embd", "30", "--n-head", "4"], "not divisible"),
    ],
)
def test_bad_input_exits_2(tmp_path, flags, message):
    p = run("train_grpo.py", "--out-dir", tmp_path, "--log", tmp_path / "g.csv", "--steps", 1, *flags)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_resume_refuses_mismatched_config(sft_dir):
    log = sft_dir / "g.csv"
    assert run("train_grpo.py", "--steps", 2, "--out-dir", sft_dir, "--log", log, *SMALL).returncode == 0
    p = run(
        "train_grpo.py",
        "--steps",
        4,
        "--out-dir",
        sft_dir,
        "--log",
        log,
        "--resume",
        *SMALL[:-6],
        "--n-layer",
        2,
        "--n-head",
        2,
        "--n-embd",
        32,
    )
    assert p.returncode == 2
    assert "does not match the flags: n_layer=1 (flags: 2)" in p.stderr and len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("case", ["missing", "empty", "metric"])
def test_plot_bad_input(tmp_path, sft_dir, case):
    if case == "missing":
        p, msg = run("plot.py", "--metric", "mean_r", tmp_path / "nope.csv"), "not found"
    elif case == "empty":
        (tmp_path / "e.csv").write_text("")
        p, msg = run("plot.py", "--metric", "mean_r", tmp_path / "e.csv"), "is empty"
    else:
        log = sft_dir / "g.csv"
        assert run("train_grpo.py", "--steps", 1, "--out-dir", sft_dir, "--log", log, *SMALL).returncode == 0
        p, msg = run("plot.py", "--metric", "reward", log), "unknown metric 'reward'"
    assert p.returncode == 2 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1

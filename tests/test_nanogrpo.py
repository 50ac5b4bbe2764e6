"""nanogrpo.py against train_grpo.py: the same SFT policy, the same steps, the same numbers; and smoke runs.

Why the tolerance: from the same policy.pth with the same config both scripts run the same float32
operations in the same order on the same inputs (the same prompts, uniforms, rollouts, grpo_loss call,
Adam and gradient clipping), so they agree bit for bit (measured: every logged number, to all of its
digits, on 2026-12-03). train_grpo.py's CSV rounds to 6 significant digits (utils/metrics.py), a relative
error of at most 5e-6: hence rel_tol 1e-5. abs_tol 1e-6 is for the numbers that are 0 in exact arithmetic
and only float32 rounding away from it: step 1's loss (-mean(A) = 0 and, with pi_theta == pi_ref, KL 0)
is about 1e-8 in both. Every bug below moves some number by 1e-3 or more.
"""

import csv

import pytest
import torch
from conftest import TINY, run

CONFIG = {"steps": 3, "batch_size": 8, "group_size": 4, "lr": 1e-3, "beta": 0.1, "temperature": 0.8, "seed": 3}
COLUMNS = ["mean_r", "std_r", "loss", "kl", "grad_norm", "lr"]


def rows(path):
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r["step"] != "0"]  # train_grpo.py's step 0: evaluation only


def nano(*args):
    return run("nanogrpo.py", *args, timeout=300)


def test_same_numbers_as_train_grpo(sft_dir, tmp_path):
    """Steps 1-3 of both scripts from one tiny SFT policy: rewards, loss, KL, gradient norm, lr per step and
    the held-out accuracy at the end. Bugs it catches, each seen to fail it (by editing nanogrpo.py):
    different prompts drawn (the uniforms drawn before the prompts: mean_r of step 1), groups laid out
    wrong (prompts tiled, not repeated: step 1's grad_norm), another advantage normalisation (scale "none":
    step 1's grad_norm), another normaliser (loss_type "bnpo": step 1's loss), the KL on the wrong side
    (old_logp and ref_logp swapped: step 2's kl), a reference that is the policy itself (kl 0), the log-probs
    at temperature 1 while sampling at 0.8, no gradient clipping, a constant lr (step 3)."""
    args = [a for k, v in CONFIG.items() for a in ("--" + k.replace("_", "-"), v)]  # train_grpo.py's spelling
    p = run("train_grpo.py", *args, *TINY, "--out-dir", sft_dir, "--log", sft_dir / "g.csv", "--eval-every", 100,
            "--no-progress")  # fmt: skip
    assert p.returncode == 0, p.stderr
    q = nano(f"--init_from={sft_dir / 'policy.pth'}", *(f"--{k}={v}" for k, v in CONFIG.items()),
             f"--log={tmp_path / 'n.csv'}", "--eval_every=100")  # fmt: skip
    assert q.returncode == 0, q.stderr
    ref, ours = rows(sft_dir / "g.csv"), rows(tmp_path / "n.csv")
    assert [r["step"] for r in ref] == [r["step"] for r in ours] == ["1", "2", "3"]
    assert float(ref[0]["std_r"]) > 0 and float(ref[1]["kl"]) > 1e-3  # not vacuous: advantages and KL at work
    for a, b in zip(ref, ours, strict=True):
        for col in COLUMNS:
            want, got = float(a[col]), float(b[col])
            assert got == pytest.approx(want, rel=1e-5, abs=1e-6), f"step {a['step']} {col}: {got} != {want}"
    assert float(ours[-1]["eval_acc"]) == pytest.approx(float(ref[-1]["eval_acc"]), abs=1e-9)  # k/500 both


TINY_NANO = ["--n_layer=1", "--n_head=2", "--n_embd=32"]


def test_smoke_sft_then_grpo(tiny_sft, tmp_path):
    """The default script with tiny settings: SFT from scratch, then one print line per step, held-out
    accuracy every eval_every steps and at the end. Its SFT is train_grpo.py's (utils/sft.py) step for step:
    the saved policy equals conftest's tiny SFT policy (same seed, 60 steps, same shape) tensor for tensor,
    which catches other SFT data (a prompt position trained on, another padding), another optimizer or
    init, or another stopping rule. train_grpo.py then starts from the policy nanogrpo.py saved."""
    out = tmp_path / "out"
    p = nano(*TINY_NANO, "--sft_steps=60", "--seed=1337", "--steps=3", "--batch_size=4", "--group_size=4",
             "--eval_every=2", f"--out_dir={out}")  # fmt: skip
    assert p.returncode == 0, p.stderr
    lines = [x for x in p.stdout.splitlines() if x.startswith("step ")]
    assert [int(x.split()[1]) for x in lines] == [1, 2, 3]
    assert ["held-out accuracy" in x for x in lines] == [False, True, True]
    assert "held-out accuracy: SFT" in p.stdout.splitlines()[-1]
    ours = torch.load(out / "policy.pth", weights_only=True)
    theirs = torch.load(tiny_sft / "policy.pth", weights_only=True)
    assert ours["model_config"] == theirs["model_config"]
    assert all(torch.equal(ours["model"][k], v) for k, v in theirs["model"].items())
    q = run("train_grpo.py", "--steps", 1, *TINY, "--batch-size", 4, "--group-size", 4, "--out-dir", out,
            "--log", out / "g.csv", "--no-progress")  # fmt: skip
    assert q.returncode == 0, q.stderr
    assert "training the SFT policy" not in q.stdout  # it loaded ours


@pytest.mark.parametrize(
    "arg, says",
    [
        ("--nope=1", "bad argument '--nope=1'"),
        ("--steps", "bad argument '--steps'"),  # no value
        ("--steps=ten", "--steps takes int values (default 200), not 'ten'"),
        ("--group_size=1", "group_size >= 2"),
        ("--init_from=/no/such/policy.pth", "cannot load"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(arg, says):
    """A typo must not train with the defaults (an unknown key silently ignored is the bug)."""
    p = nano(arg)
    assert p.returncode != 0 and says in p.stderr, p.stderr[-300:]
    assert "Traceback" not in p.stderr


def test_help_lists_every_key():
    p = nano("--help")
    assert p.returncode == 0
    for key in ["batch_size", "group_size", "lr", "beta", "steps", "seed", "init_from"]:
        assert f"  --{key}=" in p.stdout

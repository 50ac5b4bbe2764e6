"""run_example.py --tiny: every step of the pipeline runs (arithmetic GRPO and PPO, the comparison plots,
pairs -> reward model -> GRPO against it, the overoptimisation figures) and results.md is written from
the runs' own logs and summaries."""

import random

import pytest
from conftest import run

WORDS = ["good", "evil", "the", "and", "of", "to"]  # two lexicon words: a tiny SFT policy writes them


def test_run_example_tiny(tmp_path):
    rng = random.Random(0)
    text = "".join(" ".join(rng.choice(WORDS) for _ in range(10)) + "\n" for _ in range(300))
    (tmp_path / "words.txt").write_text(text)
    logs = tmp_path / "logs"
    p = run(
        "run_example.py", "--tiny", "--out-dir", tmp_path / "out", "--logs", logs, "--data", tmp_path / "words.txt",
        timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    for name in ("reward", "kl", "entropy", "loss", "accuracy", "accuracy_vs_time"):
        assert (logs / f"{name}_comparison.png").stat().st_size > 0
    for name in ("overopt_gold_vs_kl", "overopt_proxy_vs_kl", "overopt_gold_vs_step", "chain_acc_len"):
        assert (logs / f"{name}.png").stat().st_size > 0
    for csv in ("grpo", "ppo", "rm", "rlhf_grpo_beta0.04", "chain"):
        assert (logs / f"{csv}.csv").exists()
    results = (logs / "results.md").read_text()
    assert "| GRPO |" in results and "| PPO |" in results and "| GRPO beta=0.04 |" in results
    assert "| seed | accuracy | length | worked share |" in results and "\n| 1 | " in results
    assert "nan" not in results  # every cell came from a real run's numbers
    # each command is printed before it runs, so a user can rerun any step by hand
    for script in ("train_grpo.py", "train_ppo.py", "simple_example.py", "reward_model.py"):
        assert f"$ python {script}" in p.stdout
    # where the results are, and the committed ones beside them
    assert f"Your results: {logs / 'results.md'}" in p.stdout
    assert "arithmetic GRPO: held-out accuracy" in p.stdout and "committed" in p.stdout
    assert "shakespeare GRPO beta=0.04: gold score" in p.stdout


@pytest.mark.parametrize(
    "flags",
    [["--tiny"], ["--full"], ["--full", "--seeds", 3, "--steps", 10], ["--full", "--seeds", 3, "--tiny"]],
)
def test_committed_results_are_never_written_by_a_shortened_run(flags):
    p = run("run_example.py", *flags, "--logs", "results")
    assert p.returncode == 2 and "holds the committed results of exactly `--full --seeds 3`" in p.stderr


def test_run_example_bad_flag():
    p = run("run_example.py", "--seeds", 0)
    assert p.returncode == 2 and "--seeds must be >= 1" in p.stderr

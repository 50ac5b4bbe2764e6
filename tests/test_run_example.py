"""run_example.py --tiny: every step of the pipeline runs (arithmetic GRPO and PPO, the comparison plots,
pairs -> reward model -> GRPO against it, the overoptimisation figures, the chain task) and results.md is
written from the runs' own logs and summaries; the parts run at once, each step's output in a file, and a
failing step stops the job with one line; the committed chain SFT policy fits the chain task."""

import argparse
import os
import random

import pytest
import torch
from conftest import ROOT, run

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
    for page in ("grpo_vs_ppo.html", "chain.html"):  # the viewer's pages, GRPO beside PPO, printed
        html = (logs / page).read_text()
        assert str(logs / page) in p.stdout and "<html" in html.lower()
    assert html.count("class=") > 10
    assert "arithmetic GRPO: held-out accuracy" in p.stdout and "committed" in p.stdout
    assert "shakespeare GRPO beta=0.04: gold score" in p.stdout
    assert "The full runs: python run_example.py --full" in p.stdout
    # the parts ran at once, each step's output in its own file, its start and end announced
    assert "Running 3 parts at once" in p.stdout
    for step in ("arithmetic_grpo", "arithmetic_ppo", "shakespeare_grpo_beta0.04", "chain_seed1"):
        assert "held-out" in (logs / "output" / f"{step}.txt").read_text()  # the script's own last lines
    for step in ("arithmetic_grpo", "arithmetic_ppo", "shakespeare_pairs", "shakespeare_rm", "chain_seed1"):
        assert f"[{step}] done in" in p.stdout


def test_run_example_one_part_at_a_time(tmp_path):
    """--jobs 1: the scripts' output on the terminal, as --full runs them."""
    logs = tmp_path / "logs"
    p = run(
        "run_example.py", "--tiny", "--jobs", 1, "--skip-rlhf", "--skip-chain", "--out-dir", tmp_path / "out",
        "--logs", logs, timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    assert "held-out arithmetic" in p.stdout and not (logs / "output").exists()
    assert "| GRPO |" in (logs / "results.md").read_text()


def test_a_failing_part_stops_the_job(tmp_path):
    """A step that fails in one part (here: no shakespeare text) stops every part: one line naming the step,
    its exit code, never a results.md made of what happened to finish."""
    logs = tmp_path / "logs"
    p = run(
        "run_example.py", "--tiny", "--out-dir", tmp_path / "out", "--logs", logs, "--data", tmp_path / "missing.txt",
        timeout=600,
    )  # fmt: skip
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    assert "run_example.py: error: step shakespeare_pairs failed with exit code 2" in p.stderr
    assert "Traceback" not in p.stderr and not (logs / "results.md").exists()


def test_the_committed_chain_policy_fits_the_chain_task():
    """data/chain_sft_policy.pth is what `train_grpo.py --task chain` would train: the chain task's characters,
    the default model shape, the --full recipe's 1500 SFT steps. A change to the task's vocabulary or to
    the model's defaults makes it stale, and this fails."""
    from model import CharTokenizer
    from tasks.chain import ChainTask
    from utils.sft import add_model_args, check_model_config, model_config

    path = os.path.join(ROOT, "data", "chain_sft_policy.pth")
    ck = torch.load(path, weights_only=True)
    task, tok = ChainTask(), CharTokenizer(ChainTask.chars)
    assert ck["task"] == task.name and ck["chars"] == tok.chars
    parser = argparse.ArgumentParser()
    add_model_args(parser)
    check_model_config(ck["model_config"], model_config(task, tok, parser.parse_args([])), path)  # raises if not
    assert ck["info"]["sft_steps"] == 1500


def test_the_committed_shakespeare_policy_fits_the_shakespeare_task():
    """data/shakespeare_sft_policy.pth is what `simple_example.py --sft-steps 1500` would train: tiny
    Shakespeare's characters, the default model shape, 1500 SFT steps. A change to the text's vocabulary or to
    the model's defaults makes it stale, and this fails."""
    from model import CharTokenizer
    from tasks.shakespeare import ShakespeareTask
    from utils.sft import add_model_args, check_model_config, model_config

    path = os.path.join(ROOT, "data", "shakespeare_sft_policy.pth")
    ck = torch.load(path, weights_only=True)
    task = ShakespeareTask()
    tok = CharTokenizer(task.chars)
    assert ck["task"] == task.name and ck["chars"] == tok.chars
    parser = argparse.ArgumentParser()
    add_model_args(parser)
    check_model_config(ck["model_config"], model_config(task, tok, parser.parse_args([])), path)  # raises if not
    assert ck["info"]["sft_steps"] == 1500


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

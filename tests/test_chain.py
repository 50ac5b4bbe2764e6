"""The chain task (--task chain): the calculator's steps, answer extraction, reward, SFT data mix, its
evaluation columns, and a smoke run through train_grpo.py."""

import csv
import math

import pytest
import torch
from conftest import TINY, run

from model import END, GPT, CharTokenizer, GPTConfig
from tasks.chain import ChainTask, chain_answer, chain_steps, chain_worked, thinks

P = "7*3+5*2+4="  # ((7*3)+5)*2+4 = 56, left to right


def test_steps_are_left_to_right_by_hand():
    assert chain_steps(P) == [("7*3", 21), ("21+5", 26), ("26*2", 52), ("52+4", 56)]
    assert chain_worked(P) == "<7*3=21;21+5=26;26*2=52;52+4=56>56"
    assert chain_steps("9*9+9*9+9=")[-1][1] == 819  # not 9*9 + 9*9 + 9 = 171: no precedence
    assert chain_steps("26*2=") == [("26*2", 52)]  # a practice fact is a one-step chain


@pytest.mark.parametrize(
    "completion, answer, right, formed",
    [
        ("<7*3=21;21+5=26;26*2=52;52+4=56>56|", "56", 1, 1),  # worked, right
        ("56|", "56", 1, 1),  # direct, right
        ("<7*3=21;21+5=26;26*2=52;52+4=57>57|", "57", 0, 1),  # worked, wrong
        ("171|", "171", 0, 1),  # direct, wrong (the precedence answer)
        ("<7*3=21;21+5=26;26*2=52;52+4=56>56", None, 0, 0),  # truncated: no end token
        ("56", None, 0, 0),  # truncated direct
        ("<7*3=21;21+5=26|", None, 0, 0),  # scratchpad never closed
        ("<7*3=21 and so on>56|", "56", 1, 0),  # right answer, malformed scratchpad: the format term says so
        ("<>56|", "56", 1, 0),  # an empty scratchpad is not a worked solution's format
        ("5 6|", "5 6", 0, 0),
    ],
)
def test_answer_extraction_and_reward(completion, answer, right, formed):
    task = ChainTask()
    assert chain_answer(completion) == answer
    assert task.correct([P], [completion]) == [float(right)]
    assert task.well_formed([P], [completion]) == [float(formed)]
    total = task.reward_funcs[0][2] * right + task.reward_funcs[1][2] * formed  # exact 1.0 + format 0.1
    assert [name for name, _, _ in task.reward_funcs] == ["exact", "format"]
    assert sum(w * f([P], [completion])[0] for _, f, w in task.reward_funcs) == pytest.approx(total)
    assert thinks(completion) == completion.startswith("<")


def test_split_is_fixed_and_disjoint():
    a, b = ChainTask(), ChainTask()
    assert a.heldout == b.heldout and len(a.heldout) == 500 and len(a.train) == 8 * 8 * 9 * 8 * 9 - 500
    assert not set(a.heldout) & set(a.train)


def test_sft_data_mix():
    """40% practice facts (one step of a chain), 60% chains of which a fifth are worked; all of them right."""
    task = ChainTask()
    rows = task.sft_examples(torch.Generator().manual_seed(0), 4000)
    facts = [(p, c) for p, c in rows if p.count("=") == 1 and len(chain_steps(p)) == 1]
    chains = [(p, c) for p, c in rows if len(chain_steps(p)) == 4]
    worked = [(p, c) for p, c in chains if thinks(c)]
    assert len(facts) + len(chains) == len(rows)
    assert len(facts) / len(rows) == pytest.approx(0.4, abs=0.03)
    assert len(worked) / len(chains) == pytest.approx(0.2, abs=0.03)
    assert all(c == f"{chain_steps(p)[-1][1]}{END}" for p, c in facts + chains if not thinks(c))
    assert all(c == chain_worked(p) + END for p, c in worked)
    assert all(task.correct([p], [c]) == [1.0] and task.well_formed([p], [c]) == [1.0] for p, c in rows)
    steps = {e + "=" for q in task.train for e, _ in chain_steps(q)}  # a fact is a step of a training chain
    assert all(p in steps for p, _ in facts) and any(int(p.split("*")[0].split("+")[0]) >= 10 for p, _ in facts)
    assert max(len(c) for _, c in rows) <= task.max_new_tokens


def test_step_metrics_by_hand():
    task = ChainTask()
    comps = ["<7*3=21;21+5=26;26*2=52;52+4=56>56|", "56|", "57|", "<7*3=21;21+5=26"]
    m = task.step_metrics([P] * 4, comps)
    assert m["think_frac"] == 0.5
    assert m["len_right"] == (35 + 3) / 2 and m["len_wrong"] == (3 + 15) / 2
    assert math.isnan(task.step_metrics([P], ["57|"])["len_right"])


def test_evaluate_columns_are_consistent():
    """eval_acc is the format-weighted mean of the per-format accuracies; lengths are the completions'."""
    task = ChainTask()
    tok = CharTokenizer(task.chars)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32))
    with torch.no_grad():  # a random policy that opens a scratchpad about half the time
        model.lm_head.weight[tok.stoi["<"]] *= 0
    out = task.evaluate(model, tok, "cpu", n=40)
    for s in ("", "_sampled"):
        f = out[f"eval_think_frac{s}"]
        parts = [(f, out[f"eval_acc_think{s}"]), (1 - f, out[f"eval_acc_direct{s}"])]
        assert out[f"eval_acc{s}"] == pytest.approx(sum(w * a for w, a in parts if w > 0))
        assert 1 <= out[f"eval_len{s}"] <= task.max_new_tokens
    assert set(out) == {
        "eval_acc", "eval_r", "eval_len", "eval_think_frac", "eval_acc_think", "eval_acc_direct",
        "eval_acc_sampled", "eval_len_sampled", "eval_think_frac_sampled", "eval_acc_think_sampled",
        "eval_acc_direct_sampled",
    }  # fmt: skip


def test_smoke_run_logs_step_zero_and_chain_columns(tmp_path):
    log = tmp_path / "chain.csv"
    r = run(
        "train_grpo.py", "--task", "chain", *TINY, "--sft-steps", 5, "--steps", 2, "--batch-size", 2,
        "--group-size", 2, "--eval-every", 2, "--out-dir", tmp_path / "out", "--log", log, "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(log)))
    assert [row["step"] for row in rows] == ["0", "1", "2"]
    assert rows[0]["eval_len"] != "" and rows[0]["mean_r"] == ""  # step 0: the SFT policy's evaluation only
    assert rows[1]["think_frac"] != "" and rows[1]["eval_len"] == "" and rows[2]["eval_think_frac"] != ""

"""Reward model: Bradley-Terry loss against hand values, the head reads the last real token, an RM learns
an easy rule, and simple_example.py / reward_model.py as subprocesses with tiny settings and bad inputs.

The subprocess runs use a tiny made-up text of a few words (two of them lexicon words, "good" and "evil"),
so a tiny SFT policy trained for a few seconds already writes lexicon words and the data step finds pairs.
"""

import argparse
import csv
import json
import math
import random
import shutil

import pytest
import torch
from conftest import TINY, run

from model import CharTokenizer, GPTConfig
from reward_model import (
    RewardModel,
    bt_loss,
    encode_texts,
    evaluate,
    load_or_train_rm,
    load_rm,
    rm_reward_fn,
    score,
    split_groups,
    train_rm,
)
from tasks.shakespeare import ShakespeareTask, gold_score
from utils.ckpt import CheckpointError

WORDS = ["good", "evil", "the", "and", "of", "to"]


# -----------------------------------------------------------------------------
# the loss


def test_bt_loss_hand_values():
    r_chosen = torch.tensor([2.0, 0.0, -1.0], requires_grad=True)
    r_rejected = torch.tensor([0.0, 0.0, 1.0])
    loss, stats = bt_loss(r_chosen, r_rejected)
    # margins 2, 0, -2: -log sigmoid(m) = log(1 + e^-m)
    want = (math.log(1 + math.exp(-2)) + math.log(2) + math.log(1 + math.exp(2))) / 3
    assert loss.item() == pytest.approx(want, abs=1e-6)
    assert want == pytest.approx(0.982334, abs=1e-6)
    assert stats["acc"].item() == pytest.approx(1 / 3)  # only the first pair is ranked right
    assert stats["margin"].item() == pytest.approx(0.0)
    loss.backward()  # d/dr_chosen of -log sigmoid(m) / N is -sigmoid(-m) / N
    want_grad = [-1 / (1 + math.exp(m)) / 3 for m in (2.0, 0.0, -2.0)]
    assert r_chosen.grad.tolist() == pytest.approx(want_grad, abs=1e-6)


def test_bt_loss_is_stable_for_large_margins():
    loss, _ = bt_loss(torch.tensor([-1000.0, 1000.0]), torch.tensor([0.0, 0.0]))
    assert loss.item() == pytest.approx(500.0)  # (1000 + 0) / 2, not inf


# -----------------------------------------------------------------------------
# the model reads the last real token


def tiny_rm(chars="abcdefgh ", seed=0):
    torch.manual_seed(seed)
    tok = CharTokenizer(chars)
    rm = RewardModel(GPTConfig(block_size=16, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32))
    torch.nn.init.normal_(rm.head.weight, std=1.0)  # the zero init would make every score 0: a test that can't fail
    return rm.eval(), tok


def test_head_reads_last_real_token_padding_invariant():
    rm, tok = tiny_rm()
    alone = score(rm, tok, ["abc"], "cpu")[0]
    batched = score(rm, tok, ["abc", "abcdefgh hgfedc"], "cpu")  # "abc" now carries 12 pads
    assert batched[0] == pytest.approx(alone, abs=1e-5)
    # pads of another id give the same score: they sit after the last real token
    idx, lengths = encode_texts(["abc"], tok, "cpu", 16)
    padded = torch.cat([idx, torch.full((1, 9), tok.stoi["h"])], dim=1)
    with torch.no_grad():
        assert rm(padded, lengths).item() == pytest.approx(alone, abs=1e-5)
        # a second, obvious implementation: the head on the last hidden state of the unpadded row
        h, _ = rm.gpt.body(idx)
        assert rm.head(h[:, -1]).item() == pytest.approx(alone, abs=1e-5)
    # and it is the last token that is read: changing it or adding one changes the score
    assert score(rm, tok, ["abd"], "cpu")[0] != pytest.approx(alone, abs=1e-4)
    assert score(rm, tok, ["abca"], "cpu")[0] != pytest.approx(alone, abs=1e-4)


def test_encode_rejects_bad_text():
    _, tok = tiny_rm()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        encode_texts(["abz"], tok, "cpu", 16)
    with pytest.raises(ValueError, match="length"):
        encode_texts([""], tok, "cpu", 16)
    idx, _ = encode_texts(["a|"], tok, "cpu", 16)  # the end character is the end token
    assert idx[0, 1].item() == tok.eos_id


# -----------------------------------------------------------------------------
# learning an easy rule


def word_text(rng, n=3):
    return " ".join(rng.choice(WORDS) for _ in range(n)) + " "  # a trailing space: every word counts


def rule_groups(n_groups, k, seed):
    """Groups in simple_example.py's format: k random word texts each, every pair the rule prefers
    compared with noiseless labels, ties dropped."""
    rng, groups = random.Random(seed), []
    while len(groups) < n_groups:
        comps = [word_text(rng) for _ in range(k)]
        g = [gold_score(t) for t in comps]
        cmp = [[i, j] if g[i] > g[j] else [j, i] for i in range(k) for j in range(i + 1, k) if g[i] != g[j]]
        if cmp:
            groups.append({"prompt": "", "completions": comps, "comparisons": cmp})
    return groups


def rm_args(**kw):
    d = dict(rm_steps=80, rm_batch_size=8, rm_lr=3e-3, rm_ckpt_every=40, seed=0)
    return argparse.Namespace(**(d | kw))


def test_rm_learns_an_easy_rule(tmp_path):
    rm, tok = tiny_rm(chars="".join(sorted(set("".join(WORDS) + " "))))
    rm.train()
    torch.nn.init.zeros_(rm.head.weight)
    train, val = split_groups(rule_groups(200, 4, seed=1), 0.2)
    before = evaluate(rm, tok, val, "cpu")
    assert before["val_acc"] == 0.0  # all scores 0: no pair ranked right yet (ties count as wrong)
    m = train_rm(rm, tok, train, val, "cpu", rm_args(), tmp_path / "ck.pt", log=lambda s: None)
    assert m["val_gold_pairs"] == sum(len(x["comparisons"]) for x in val)
    assert m["val_gold_acc"] > 0.8, m  # chance is 0.5
    assert m["val_acc"] == m["val_gold_acc"]  # noiseless labels: the two accuracies are one


# -----------------------------------------------------------------------------
# the scripts


@pytest.fixture(scope="module")
def words_run(tmp_path_factory):
    """A tiny text, a tiny SFT policy on it, pairs from simple_example.py, an RM from reward_model.py."""
    d = tmp_path_factory.mktemp("rm")
    rng = random.Random(0)
    (d / "words.txt").write_text("".join(word_text(rng, 10) + "\n" for _ in range(300)))
    common = ["--out-dir", d, "--data", d / "words.txt", "--pairs", d / "p.jsonl", "--device", "cpu", *TINY]
    p = run(
        "simple_example.py", *common, "--sft-steps", 40, "--sft-batch-size", 16, "--sft-lr", 3e-3,
        "--n-pairs", 60, "--max-prompts", 64, "--samples-per-prompt", 4,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    q = run("reward_model.py", *common, "--rm-steps", 6, "--rm-ckpt-every", 3, "--log", d / "rm.csv")
    assert q.returncode == 0, q.stderr
    return d, common, p.stdout, q.stdout


def test_simple_example_writes_labelled_pairs(words_run):
    d, _, out, _ = words_run
    groups = [json.loads(line) for line in open(d / "p.jsonl")]
    pairs = [(x["completions"][c], x["completions"][r]) for x in groups for c, r in x["comparisons"]]
    assert f"{len(pairs)} pairs ->" in out and "label agreement with the noiseless rule" in out
    assert 2 <= len(pairs) <= 60 + 6  # sampling stops once 60 are kept; the last prompt adds at most 4C2
    for x in groups:
        assert set(x) == {"prompt", "completions", "comparisons"} and len(x["prompt"]) == 32
        assert len(x["completions"]) == 4 and all(len(c) == 32 for c in x["completions"])
        for c, r in x["comparisons"]:
            assert c != r and gold_score(x["completions"][c]) != gold_score(x["completions"][r])  # no ties
    agree = sum(gold_score(c) > gold_score(r) for c, r in pairs) / len(pairs)
    assert f"{agree:.3f}" in out  # the printed agreement is the file's


def test_split_groups_holds_out_whole_prompts():
    groups = rule_groups(50, 4, seed=2)
    train, val = split_groups(groups, 0.2)
    assert len(train) + len(val) == 50 and train and val
    assert not {id(x) for x in train} & {id(x) for x in val}  # a prompt is on one side only
    n_val = sum(len(x["comparisons"]) for x in val)
    assert n_val >= 0.2 * sum(len(x["comparisons"]) for x in groups)
    assert split_groups(groups, 0.2) == (train, val)  # a fixed permutation, whatever the global seed


def test_reward_model_script_trains_resumes_and_loads(words_run):
    d, common, _, out = words_run
    assert "held-out" in out and "vs the noiseless rule" in out and (d / "rm.pth").exists()
    with open(d / "rm.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert float(rows[0]["loss"]) == pytest.approx(math.log(2), abs=1e-4)  # zero head: r = 0 at step 1
    assert rows[2]["val_acc"] != "" and rows[0]["val_acc"] == ""
    # resume: 3 more steps, appended to the same CSV
    p = run("reward_model.py", *common, "--rm-steps", 9, "--rm-ckpt-every", 3, "--log", d / "rm.csv", "--resume")
    assert p.returncode == 0, p.stderr
    assert "resumed from" in p.stdout
    with open(d / "rm.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, 10))
    # the integration API: loads rm.pth (no training), scores completions
    args = argparse.Namespace(out_dir=str(d), n_layer=1, n_head=2, n_embd=32, rm_steps=1)
    task = ShakespeareTask(data_path=str(d / "words.txt"))
    rm, tok, info = load_or_train_rm(task, args, "cpu", log=lambda s: pytest.fail(f"trained again: {s}"))
    assert not rm.training and not any(p.requires_grad for p in rm.parameters())
    assert 0 <= info["val_acc"] <= 1
    f = rm_reward_fn(rm, tok, "cpu")
    texts = ["good and the good of the to ", "evil and evil the of to and "]
    r = f(["prompt one", "prompt two"], texts)
    assert isinstance(r, list) and len(r) == 2 and all(isinstance(x, float) for x in r)
    assert r == pytest.approx(score(rm, tok, texts, "cpu"))
    with pytest.raises(CheckpointError, match="does not match the flags"):
        load_rm(d / "rm.pth", task, argparse.Namespace(n_layer=1, n_head=2, n_embd=64), "cpu")


@pytest.mark.parametrize("driver", ["train_grpo.py", "train_ppo.py"])
def test_drivers_optimise_the_rm_and_log_the_rule(words_run, tmp_path, driver):
    """--task shakespeare: the reward is the RM's score (r_rm), the rule is logged beside it (gold_r).
    From an out-dir holding only the SFT policy, the driver first samples pairs and trains the RM."""
    d, common, _, _ = words_run
    out = tmp_path / "o"
    out.mkdir()
    shutil.copy(d / "policy.pth", out / "policy.pth")
    rm_flags = ["--n-pairs", 30, "--max-prompts", 64, "--samples-per-prompt", 4, "--rm-steps", 3]
    args = ["--task", "shakespeare", "--data", d / "words.txt", "--out-dir", out, "--device", "cpu", *TINY]
    args += ["--steps", 2, "--batch-size", 2, "--group-size", 2, "--eval-every", 2, "--no-progress", *rm_flags]
    p = run(driver, *args, "--log", tmp_path / "g.csv")
    assert p.returncode == 0, p.stderr
    assert (out / "rm.pth").exists() and (out / "prefs.jsonl").exists()  # the run keeps its own pairs
    assert "training the reward model" in p.stdout
    with open(tmp_path / "g.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows = rows[1:]  # after step 0, the SFT policy's evaluation
    assert len(rows) == 2 and rows[0]["r_rm"] != "" and rows[0]["gold_r"] != ""
    assert "r_lexicon" not in rows[0]
    assert float(rows[0]["mean_r"]) == pytest.approx(float(rows[0]["r_rm"]))  # the RM is the whole reward
    # a second run finds rm.pth and does not train it again
    p = run(driver, *args, "--log", tmp_path / "g2.csv")
    assert p.returncode == 0 and "training the reward model" not in p.stdout, p.stderr


def test_bad_inputs_exit_2(words_run, tmp_path):
    d, common, _, _ = words_run
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "", "completions": ["a", "b"], "comparisons": [[0, 1]]}\nnot json\n')
    cases = [
        (["--pairs", bad], "line 2 is not JSON"),
        (["--rm-lr", 0], "must be > 0"),
        (["--rm-val-frac", 1.5], "--rm-val-frac"),
        (["--out", tmp_path / "rm.pth", "--resume"], "no checkpoint"),
        (["--data", tmp_path / "missing.txt"], "not found"),
    ]
    for extra, msg in cases:
        p = run("reward_model.py", *common, "--rm-steps", 1, "--log", tmp_path / "x.csv", *extra)
        assert p.returncode == 2, (extra, p.stderr)
        assert msg in p.stderr.strip().splitlines()[-1], (extra, p.stderr)  # argparse adds a usage line above
    # a truncated SFT policy: the data step refuses it with one line
    (tmp_path / "o").mkdir()
    data = (d / "policy.pth").read_bytes()
    (tmp_path / "o" / "policy.pth").write_bytes(data[: len(data) // 2])
    p = run("simple_example.py", "--out-dir", tmp_path / "o", "--data", d / "words.txt", *TINY)
    assert p.returncode == 2 and "corrupt or truncated" in p.stderr, p.stderr

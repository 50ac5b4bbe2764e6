"""Bring your own model and task, end to end: train_grpo.py / train_ppo.py on a nanoGPT checkpoint, on a
save_pretrained GPT-2 folder with a JSONL task, and on a task file outside the project; the bad inputs.
All offline, tiny settings, each a subprocess run as a user would type it."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from test_init_from import nanogpt_state_dict, write_meta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAKESPEARE_CHARS = "".join(sorted(set(open(os.path.join(ROOT, "data", "tinyshakespeare.txt")).read())))


def run(script, *args, cwd=None, env=None):
    cmd = [sys.executable, os.path.join(ROOT, script), "--no-progress", "--device", "cpu", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=600)


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def nanogpt_ckpt(tmp_path_factory):
    """nanoGPT/out-shakespeare-char/ckpt.pt and nanoGPT/data/shakespeare_char/meta.pkl in nanoGPT's layout:
    torch.compile's `_orig_mod.` keys, bias=True, the full shakespeare_char vocabulary, block_size 64."""
    root = tmp_path_factory.mktemp("byo") / "nanoGPT"
    sd = nanogpt_state_dict(len(SHAKESPEARE_CHARS), C=32, L=2, T=64, bias=True)
    args = dict(
        n_layer=2, n_head=2, n_embd=32, block_size=64, bias=True, vocab_size=len(SHAKESPEARE_CHARS), dropout=0.0
    )
    ck = {
        "model": {"_orig_mod." + k: v for k, v in sd.items()},
        "optimizer": {"state": {}, "param_groups": []},
        "model_args": args,
        "iter_num": 2000,
        "best_val_loss": torch.tensor(1.88),
        "config": {"dataset": "shakespeare_char", "compile": True},
    }
    os.makedirs(root / "out-shakespeare-char")
    torch.save(ck, root / "out-shakespeare-char" / "ckpt.pt")
    write_meta(str(root / "data" / "shakespeare_char" / "meta.pkl"), SHAKESPEARE_CHARS)
    return root / "out-shakespeare-char" / "ckpt.pt"


def test_grpo_and_ppo_on_a_nanogpt_checkpoint(nanogpt_ckpt, tmp_path):
    common = ["--init-from", nanogpt_ckpt, "--task", "shakespeare", "--reward", "rule", "--batch-size", 2]
    common += ["--group-size", 2, "--eval-every", 1, "--out-dir", tmp_path / "out"]
    r = run("train_grpo.py", *common, "--steps", 2, "--log", tmp_path / "g.csv")
    assert r.returncode == 0, r.stderr
    assert len(rows(tmp_path / "g.csv")) == 3 and "init from" in r.stdout  # step 0 + 2
    summary = json.load(open(tmp_path / "out" / "grpo_summary.json"))
    assert summary["sft"]["format"] == "nanogpt" and summary["sft"]["iter_num"] == 2000
    assert not summary["sft"]["added_end_token"]  # shakespeare completions have a fixed length
    r = run("train_grpo.py", *common, "--steps", 3, "--log", tmp_path / "g.csv", "--resume")
    assert r.returncode == 0, r.stderr
    assert [int(x["step"]) for x in rows(tmp_path / "g.csv")] == [0, 1, 2, 3]
    other = tmp_path / "other.pt"  # the same weights elsewhere: a resume must start from the same model
    shutil.copy(nanogpt_ckpt, other)
    common[1] = other
    meta = nanogpt_ckpt.parent.parent / "data" / "shakespeare_char" / "meta.pkl"
    r = run("train_grpo.py", *common, "--steps", 4, "--log", tmp_path / "g.csv", "--resume", "--meta", meta)
    assert r.returncode == 2 and "started from --init-from" in r.stderr, r.stderr
    common[1] = nanogpt_ckpt
    r = run("train_ppo.py", *common, "--steps", 2, "--num-minibatches", 2, "--log", tmp_path / "p.csv")
    assert r.returncode == 0, r.stderr
    assert len(rows(tmp_path / "p.csv")) == 3


QA = [  # prompts of different lengths in characters and in BPE tokens
    {"prompt": "the cat sat on the", "answer": "mat"},
    {"prompt": "hello", "answer": "world"},
    {"prompt": "a dog, a cat and a", "answer": "bird"},
    {"prompt": "the end is", "answer": "near"},
    {"prompt": "said the", "answer": "cat"},
]


def test_grpo_on_a_gpt2_folder_with_a_jsonl_task(tiny_gpt2, tmp_path):
    path, _, hf_tok = tiny_gpt2
    assert len({len(hf_tok(q["prompt"])["input_ids"]) for q in QA}) > 2  # the batch really is padded
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QA * 4))
    args = ["--init-from", path, "--task", f"jsonl:{data}", "--batch-size", 2, "--group-size", 2]
    r = run(
        "train_grpo.py",
        *args,
        "--steps",
        2,
        "--eval-every",
        2,
        "--out-dir",
        tmp_path / "o",
        "--log",
        tmp_path / "q.csv",
    )
    assert r.returncode == 0, r.stderr
    log = rows(tmp_path / "q.csv")
    assert len(log) == 3 and log[-1]["eval_acc"] != "" and float(log[1]["len_mean"]) > 0
    summary = json.load(open(tmp_path / "o" / "grpo_summary.json"))
    assert summary["sft"]["format"] == "hf" and summary["task"].startswith("jsonl_qa_")


MY_TASK = '''
import random

class Echo:
    """Repeat the letters of the prompt: "abc=" -> "abc|" (the project is never imported)."""
    name, max_new_tokens, chars = "echo", 5, "abc="
    reward_funcs = [("exact", lambda ps, cs: [float(c == p[:-1] + "|") for p, c in zip(ps, cs)], 1.0)]
    heldout = ["ab=", "cab=", "b="]

    def sample_prompts(self, g, n):
        rng = random.Random(int(g.initial_seed()))
        return ["".join(rng.choice("abc") for _ in range(rng.randint(1, 3))) + "=" for _ in range(n)]

    def sft_examples(self, g, n):
        return [(p, p[:-1] + "|") for p in self.sample_prompts(g, n)]
'''


def test_task_file_outside_the_project(tmp_path):
    (tmp_path / "my_task.py").write_text(MY_TASK)
    tiny = ["--n-layer", 1, "--n-head", 2, "--n-embd", 16, "--sft-steps", 3, "--batch-size", 2, "--group-size", 2]
    r = run("train_grpo.py", "--task", "my_task.py:Echo", *tiny, "--steps", 2, "--out-dir", "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(rows(tmp_path / "logs" / "grpo.csv")) == 3
    env = dict(os.environ, PYTHONPATH=str(tmp_path))  # the module:Name form, for train_ppo.py
    r = run(
        "train_ppo.py", "--task", "my_task:Echo", *tiny, "--steps", 1, "--num-minibatches", 1, cwd=tmp_path, env=env
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("script", ["train_grpo.py", "train_ppo.py"])
def test_bad_inputs_fail_in_one_line(script, nanogpt_ckpt, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1+1=", "answer": "2"}\n{"prompt": "2+2="}\n')
    cases = [
        (["--task", "nope.py:Task"], "nope.py"),
        (["--task", f"jsonl:{bad}"], "bad.jsonl:2"),
        (["--init-from", tmp_path / "missing.pt"], "missing.pt"),
        (["--init-from", nanogpt_ckpt, "--task", "arithmetic"], "fit the model's vocabulary"),
    ]
    for args, needle in cases:
        r = run(script, *args, "--steps", 1, "--out-dir", tmp_path / "o", "--log", tmp_path / "x.csv")
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, r.stderr)
        assert "Traceback" not in r.stderr and not os.path.exists(tmp_path / "x.csv")


def test_the_docs_task_snippet_runs_as_written(tmp_path):
    """docs/bring-your-own.md's code block, pasted into a file of its own, is a task train_grpo.py accepts, and
    it is examples/reverse_task.py's code (whose training the page reports). Bug: the snippet missing an
    import (it failed with NameError before its imports were added), or drifting from the example file."""
    import re

    from tasks import load_task

    text = open(os.path.join(ROOT, "docs", "bring-your-own.md")).read()
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "class ReverseTask" in b]
    path = tmp_path / "my_task.py"
    path.write_text(snippet)
    task = load_task(f"{path}:ReverseTask")
    g = torch.Generator().manual_seed(0)
    prompts = task.sample_prompts(g, 4)
    examples = task.sft_examples(g, 4)
    assert all(task.correct([p], [c]) == [1.0] for p, c in examples)
    assert len(prompts) == 4 and len(task.heldout) == 200
    example = open(os.path.join(ROOT, "examples", "reverse_task.py")).read()
    assert snippet.split("class ReverseTask")[1] in example  # the class body, to the last line

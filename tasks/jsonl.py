"""--task jsonl:FILE[,HELDOUT_FILE]: prompt/answer rows from a file, {"prompt": str, "answer": str} a line.

    python train_grpo.py --task jsonl:data.jsonl
    python train_grpo.py --task jsonl:train.jsonl,heldout.jsonl

JsonlTask says how it splits, scores and sizes (docs/bring-your-own.md).
"""

import hashlib
import json
import os

import torch

from model import END
from tasks.base import TaskError
from tasks.rollout import evaluate_greedy, sft_batch_from_examples


def read_jsonl(path):
    """[(prompt, answer, line number)] from a file of {"prompt": str, "answer": str} lines (blank lines
    skipped, other keys ignored). Raises TaskError naming path:line for anything else."""
    if not os.path.isfile(path):
        raise TaskError(f"{path}: file not found")
    rows = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise TaskError(f"{path}:{n}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskError(f"{path}:{n}: bad JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(row, dict):
                raise TaskError(f'{path}:{n}: a row is an object {{"prompt": ..., "answer": ...}}, not {row!r:.40}')
            for key in ("prompt", "answer"):
                if key not in row:
                    raise TaskError(f'{path}:{n}: no "{key}" (a row is {{"prompt": str, "answer": str}})')
                if not isinstance(row[key], str):
                    raise TaskError(f'{path}:{n}: "{key}" is {type(row[key]).__name__} {row[key]!r:.40}, not a string')
                if END in row[key]:
                    raise TaskError(f'{path}:{n}: "{key}" contains {END!r}, the character reserved for the end token')
            if not row["prompt"]:
                raise TaskError(f'{path}:{n}: empty "prompt"')
            rows.append((row["prompt"], row["answer"], n))
    return rows


class JsonlTask:
    """jsonl:FILE[,HELDOUT_FILE]: one answer per prompt, verifiable rewards as in arithmetic.

    Split: HELDOUT_FILE's rows are held out (a prompt in both files is held out only, and the count of such
    prompts is printed); without it, n // 10 of FILE's distinct prompts (at least 1,
    at most 500; FILE needs 2) chosen with the fixed seed 1234 (never --seed), the rest train.
    Rewards: exact (1.0) the completion stopped (ends with END) and, without END and surrounding
    whitespace, equals the answer stripped; format (0.1) it stopped with some text before END.
    correct = exact. max_new_tokens = longest answer in characters + 1 (the end token) + 2 spare (room
    for whitespace around it; a character tokenizer uses one token per character, GPT-2's BPE fewer on
    most text). chars: every character of the prompts and answers; block_size: the longest prompt +
    max_new_tokens. A prompt seen twice must have the same answer. The task's name is jsonl_<FILE's stem>_<8 hex
    digits of the files' paths>, so two files of one name in different folders get different out/ folders.
    """

    uses_eos = True
    rl_steps = 200

    def __init__(self, path, heldout_path=None):
        # the name (out/<name>: the SFT policy) is unique to the file(s): two train.jsonl in different folders
        # must not share a policy trained on the other's characters
        where = ",".join(os.path.realpath(p) for p in (path, heldout_path) if p)
        digest = hashlib.sha1(where.encode()).hexdigest()[:8]
        self.name = f"jsonl_{os.path.splitext(os.path.basename(path))[0]}_{digest}"
        files = [(path, read_jsonl(path))] + ([(heldout_path, read_jsonl(heldout_path))] if heldout_path else [])
        for p, rows in files:
            if not rows:
                raise TaskError(f'{p}: no rows (a row is a line {{"prompt": str, "answer": str}})')
        self.answer, where = {}, {}  # prompt -> answer, prompt -> "file:line" it was first seen at
        for p, rows in files:
            for prompt, answer, n in rows:
                if prompt in self.answer and self.answer[prompt] != answer:
                    raise TaskError(f"{p}:{n}: prompt {prompt!r:.40} has another answer at {where[prompt]}")
                self.answer.setdefault(prompt, answer)
                where.setdefault(prompt, f"{p}:{n}")
        prompts = list(dict.fromkeys(prompt for prompt, _, _ in files[0][1]))  # distinct, in file order
        self.overlap = 0  # training prompts removed because the held-out file holds them too
        if heldout_path:
            self.heldout = list(dict.fromkeys(prompt for prompt, _, _ in files[1][1]))
            held = set(self.heldout)
            self.train = [p for p in prompts if p not in held]  # a held-out prompt is never trained on
            self.overlap = len(prompts) - len(self.train)
            if not self.train:
                raise TaskError(
                    f"{path}: every prompt is also in the held-out file {heldout_path}: nothing to train on"
                )
            if self.overlap and os.environ.get("RANK", "0") == "0":
                print(f"{path}: {self.overlap} prompts are also in {heldout_path}; they are held out, not trained on")
        else:
            if len(prompts) < 2:
                raise TaskError(f"{path}: 1 distinct prompt: at least 2 are needed, or name a held-out file")
            k = min(500, max(1, len(prompts) // 10))
            perm = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(1234)).tolist()
            held = set(perm[:k])
            self.train = [p for i, p in enumerate(prompts) if i not in held]
            self.heldout = [p for i, p in enumerate(prompts) if i in held]
        self.max_new_tokens = max(len(a) for a in self.answer.values()) + 3
        self.block_size = max(len(p) for p in self.answer) + self.max_new_tokens
        self.chars = "".join(sorted(set("".join(self.answer) + "".join(self.answer.values()))))
        self.reward_funcs = [("exact", self.exact, 1.0), ("format", self.format, 0.1)]
        self.correct = self.exact

    def exact(self, prompts, completions):
        return [
            float(c.endswith(END) and c[: -len(END)].strip() == self.answer[p].strip())
            for p, c in zip(prompts, completions, strict=True)
        ]

    def format(self, prompts, completions):
        return [float(c.endswith(END) and c[: -len(END)].strip() != "") for c in completions]

    def sample_prompts(self, g, n):
        idx = torch.randint(len(self.train), (n,), generator=g).tolist()
        return [self.train[i] for i in idx]

    def sft_examples(self, g, n):
        return [(p, self.answer[p] + END) for p in self.sample_prompts(g, n)]

    def sft_batch(self, g, n, tok):
        return sft_batch_from_examples(self.sft_examples(g, n), tok)

    def sft_progress(self, model, tok, device):
        """Greedy accuracy on the first 500 training prompts (as arithmetic's)."""
        return evaluate_greedy(self, model, tok, device, self.train[:500])["eval_acc"]

    def evaluate(self, model, tok, device):
        return evaluate_greedy(self, model, tok, device)

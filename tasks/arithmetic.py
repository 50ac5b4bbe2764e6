"""--task arithmetic: "37+48=" -> "85|" ("|" is the end token), verifiable rewards as in DeepSeek-R1.

    python train_grpo.py --task arithmetic

Operands 10..99; the 8100 problems are split once, with a fixed seed that never depends on --seed, into
7600 for training and 500 held out (docs/arithmetic.md).
"""

import re

import torch

from model import END
from tasks.rollout import evaluate_greedy, sft_batch_from_examples


def _answer(prompt):
    a, b = prompt[:-1].split("+")
    return str(int(a) + int(b))


def exact_match(prompts, completions):
    """1.0 when the completion is exactly the sum's digits followed by the end token."""
    return [1.0 if c == _answer(p) + END else 0.0 for p, c in zip(prompts, completions, strict=True)]


_WELL_FORMED = re.compile(r"^\d{1,3}" + re.escape(END) + "$")


def well_formed(prompts, completions):
    """1.0 when the completion is 1-3 digits then the end token (any number: the format, not the sum)."""
    return [1.0 if _WELL_FORMED.match(c) else 0.0 for c in completions]


class ArithmeticTask:
    name = "arithmetic"
    chars = "0123456789+="
    prompt_len = 6
    max_new_tokens = 5  # 3 digits + end token, and 1 to spare: a completion that never ends is truncated
    block_size = 16
    uses_eos = True
    rl_steps = 1200  # default --steps of train_grpo.py / train_ppo.py: >= 0.90 held-out for seeds 1-3 (README)
    reward_funcs = [("exact", exact_match, 1.0), ("format", well_formed, 0.1)]
    correct = staticmethod(exact_match)

    def __init__(self, data_path=None):
        problems = [f"{a}+{b}=" for a in range(10, 100) for b in range(10, 100)]
        g = torch.Generator().manual_seed(1234)  # the split never depends on --seed
        perm = torch.randperm(len(problems), generator=g).tolist()
        self.heldout = [problems[i] for i in perm[:500]]
        self.train = [problems[i] for i in perm[500:]]

    def sample_prompts(self, g, n):
        idx = torch.randint(len(self.train), (n,), generator=g).tolist()
        return [self.train[i] for i in idx]

    def sft_examples(self, g, n):
        return [(p, _answer(p) + END) for p in self.sample_prompts(g, n)]

    def sft_batch(self, g, n, tok):
        return sft_batch_from_examples(self.sft_examples(g, n), tok)

    def sft_progress(self, model, tok, device):
        """Greedy accuracy on 500 training problems: SFT stops at --sft-target-acc, leaving GRPO work to do."""
        return self.evaluate(model, tok, device, split="train")["eval_acc"]

    def evaluate(self, model, tok, device, n=None, split="heldout"):
        """Greedy decoding on the held-out problems (or 500 training ones): exact-match accuracy and
        mean total reward."""
        prompts = self.heldout[:n] if split == "heldout" else self.train[:500]
        return evaluate_greedy(self, model, tok, device, prompts)

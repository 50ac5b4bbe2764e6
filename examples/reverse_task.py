"""An example task of your own: reverse a word. Prompt "abc>", right completion "cba|" ("|" ends it).

    python train_grpo.py --task examples/reverse_task.py:ReverseTask

The interface is described once, in tasks/base.py; this class uses the required attributes plus chars and
sft_examples, which a model trained from scratch needs. The task is easy: 400 SFT steps alone got
every held-out word right; with --sft-steps 60 held-out accuracy went 0.83 -> 0.86 over the 200 GRPO steps
(seed 1337, CPU).
"""

import itertools
import random

import torch

from model import END


class ReverseTask:
    name = "reverse"
    chars = "abcdef>"
    max_new_tokens = 7  # the longest word (5 letters) + the end token + 1 spare

    def __init__(self):
        words = ["".join(w) for n in (3, 4, 5) for w in itertools.product("abcdef", repeat=n)]
        random.Random(0).shuffle(words)  # a fixed split: 200 held-out words, the rest train
        self.heldout, self.train = [w + ">" for w in words[:200]], [w + ">" for w in words[200:]]
        self.reward_funcs = [("exact", self.correct, 1.0), ("format", self.stops, 0.1)]

    def sample_prompts(self, g, n):
        return [self.train[i] for i in torch.randint(len(self.train), (n,), generator=g).tolist()]

    def sft_examples(self, g, n):
        return [(p, p[-2::-1] + END) for p in self.sample_prompts(g, n)]  # "abc>"[-2::-1] == "cba"

    def correct(self, prompts, completions):
        return [float(c == p[-2::-1] + END) for p, c in zip(prompts, completions, strict=True)]

    def stops(self, prompts, completions):
        return [float(len(c) > 1 and c.endswith(END)) for c in completions]

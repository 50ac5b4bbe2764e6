"""Give your own task a tool: two-digit sums, with a calculator the policy may call.

    python train_grpo.py --task examples/calculator_task.py:CalculatorTask

A tool is two attributes of the task (tasks/base.py, the task interface): tool(prompt, text) -> str, the
environment's reply, and tool_trigger, the one character that ends a call. Here the policy answers "37+48="
directly, "85|", or calls the calculator: it writes "#", the environment writes "85" and the policy ends with
the end token, "#85|". The reply is in the text the reward functions see and in the context of every later
token, but never trained on: train_grpo.py leaves the environment's tokens out of the loss, and the SFT
batches made from sft_examples leave them out of the targets (the tool is replayed on each example to find
them). docs/tools.md: the chain_tool task, where GRPO learns to call a calculator it saw in 0.6% of its SFT rows.
"""

import random

import torch

from model import END


class CalculatorTask:
    name = "calculator"
    chars = "0123456789+=#"
    max_new_tokens = 6  # "#", 3 digits, the end token and 1 spare
    tool_trigger = "#"
    call_frac = 0.02  # of the SFT rows: the rest answer directly

    def __init__(self):
        problems = [f"{a}+{b}=" for a in range(10, 100) for b in range(10, 100)]
        random.Random(0).shuffle(problems)  # a fixed split: 200 held out, the rest train
        self.heldout, self.train = problems[:200], problems[200:]
        self.reward_funcs = [("exact", self.correct, 1.0)]

    def tool(self, prompt, text):
        """The environment: the prompt's sum (the text so far, here always "#", is not needed)."""
        a, b = prompt.removesuffix("=").split("+")
        return str(int(a) + int(b))

    def sample_prompts(self, g, n):
        return [self.train[i] for i in torch.randint(len(self.train), (n,), generator=g).tolist()]

    def sft_examples(self, g, n):
        """Direct answers, and a few calls: "#85|", whose "85" is the tool's and not an SFT target."""
        prompts, calls = self.sample_prompts(g, n), (torch.rand(n, generator=g) < self.call_frac).tolist()
        return [(p, ("#" if c else "") + self.tool(p, "") + END) for p, c in zip(prompts, calls, strict=True)]

    def correct(self, prompts, completions):
        """The sum, directly or after a call, then the end token."""
        return [float(c.removeprefix("#") == self.tool(p, "") + END) for p, c in zip(prompts, completions, strict=True)]

"""--task chain: a calculator chain, where working it out pays (R1-Zero at toy scale, docs/chain.md).

    python train_grpo.py --task chain
    python train_grpo.py --task tasks.chain:ChainControlTask   # the control: SFT without worked solutions

"7*3+5*2+4=" -> "<7*3=21;21+5=26;26*2=52;52+4=56>56|" or "56|", evaluated left to right (ChainTask).
"""

import re

import torch

from model import END
from tasks.base import total_reward
from tasks.rollout import complete, sft_batch_from_examples

# A prompt "7*3+5*2+4=" is read left to right, as a pocket calculator does: ((7*3)+5)*2+4 = 56. Digits:
# the multipliers a, b, d in 2..9, the added c, e in 1..9. A worked solution writes each step as a small
# fact between "<" and ">", then the answer: "<7*3=21;21+5=26;26*2=52;52+4=56>56|"; a direct one is "56|".
_CHAIN_STEP = r"\d+[*+]\d+=\d+"
_CHAIN_FORM = re.compile(rf"^(<{_CHAIN_STEP}(;{_CHAIN_STEP})*>)?\d+{re.escape(END)}$")


def chain_steps(prompt):
    """The calculator's steps of a chain prompt: [("7*3", 21), ("21+5", 26), ...]; the last value is the answer."""
    tokens = re.findall(r"\d+|[*+]", prompt.rstrip("="))
    value, steps = int(tokens[0]), []
    for op, x in zip(tokens[1::2], tokens[2::2], strict=True):
        new = value * int(x) if op == "*" else value + int(x)
        steps.append((f"{value}{op}{x}", new))
        value = new
    return steps


def chain_worked(prompt):
    """The worked solution of a chain prompt (without the end token)."""
    steps = chain_steps(prompt)
    return "<" + ";".join(f"{e}={v}" for e, v in steps) + ">" + str(steps[-1][1])


def chain_answer(completion):
    """What a completion answers: the text after the scratchpad's ">" (or the whole text without one), up to
    the end token; None when it did not stop or its scratchpad never closes."""
    if not completion.endswith(END):
        return None
    body = completion[: -len(END)]
    if body.startswith("<"):
        return body.split(">", 1)[1] if ">" in body else None
    return body


def thinks(completion):
    """A worked solution: the completion opens a scratchpad."""
    return completion.startswith("<")


class ChainTask:
    """--task chain: a*b+c*d+e evaluated left to right. Reward: the final answer only (exact, 1.0) plus
    a small well-formedness term (0.1: a direct answer or a scratchpad of steps, then digits, then the end
    token; the same for both formats). Never the length and never the scratchpad itself: whatever length
    the policy ends at is what correctness paid for.

    SFT data is deliberately mixed, like a base model that has seen a little worked reasoning: 40% of the
    rows are practice facts ("26*2=" -> "52|", each step of a random chain on its own), the other 60%
    chains, a fifth of them (worked_frac, a class attribute) worked and the rest direct answers.
    """

    name = "chain"
    chars = "0123456789*+=<>;"
    max_new_tokens = 40  # the longest worked solution, "<9*9=81;81+9=90;90*9=810;810+9=819>819|", is 39
    block_size = 64
    uses_eos = True
    rl_steps = 300
    worked_frac = 0.2  # of the SFT chain examples
    fact_frac = 0.4  # of all SFT rows

    def __init__(self, data_path=None, worked_frac=None):
        self.worked_frac = self.worked_frac if worked_frac is None else worked_frac
        problems = [
            f"{a}*{b}+{c}*{d}+{e}="
            for a in range(2, 10)
            for b in range(2, 10)
            for c in range(1, 10)
            for d in range(2, 10)
            for e in range(1, 10)
        ]
        g = torch.Generator().manual_seed(1234)  # the split never depends on --seed
        perm = torch.randperm(len(problems), generator=g).tolist()
        self.heldout = [problems[i] for i in perm[:500]]
        self.train = [problems[i] for i in perm[500:]]
        self.reward_funcs = [("exact", self.correct, 1.0), ("format", self.well_formed, 0.1)]

    def correct(self, prompts, completions):
        return [float(chain_answer(c) == str(chain_steps(p)[-1][1])) for p, c in zip(prompts, completions, strict=True)]

    def well_formed(self, prompts, completions):
        return [float(bool(_CHAIN_FORM.match(c))) for c in completions]

    def sample_prompts(self, g, n):
        idx = torch.randint(len(self.train), (n,), generator=g).tolist()
        return [self.train[i] for i in idx]

    def sft_examples(self, g, n):
        """n (prompt, completion) rows: practice facts, worked chains and direct chains (the class docstring)."""
        rows = []
        for p in self.sample_prompts(g, n):
            kind = torch.rand(2, generator=g).tolist()
            step = int(torch.randint(4, (1,), generator=g))
            if kind[0] < self.fact_frac:  # one step of the chain as a fact of its own
                expr, value = chain_steps(p)[step]
                rows.append((expr + "=", f"{value}{END}"))
            elif kind[1] < self.worked_frac:
                rows.append((p, chain_worked(p) + END))
            else:
                rows.append((p, f"{chain_steps(p)[-1][1]}{END}"))
        return rows

    def sft_batch(self, g, n, tok):
        return sft_batch_from_examples(self.sft_examples(g, n), tok)

    def step_metrics(self, prompts, completions):
        """Per-step rollout columns: the share of worked solutions, and the mean length (characters = tokens,
        end token included) of the right and of the wrong completions."""
        right = self.correct(prompts, completions)
        ok = [len(c) for c, r in zip(completions, right, strict=True) if r]
        bad = [len(c) for c, r in zip(completions, right, strict=True) if not r]
        return {
            "think_frac": sum(map(thinks, completions)) / len(completions),
            "len_right": sum(ok) / len(ok) if ok else float("nan"),
            "len_wrong": sum(bad) / len(bad) if bad else float("nan"),
        }

    def evaluate(self, model, tok, device, n=None):
        """Held-out chains, greedy and sampled (temperature 1, fixed random numbers): accuracy, mean length,
        the share of worked solutions and the accuracy of each format (utils/metrics.py defines the keys)."""
        prompts = self.heldout[:n]
        out = {}
        u = torch.rand(len(prompts), self.max_new_tokens, generator=torch.Generator().manual_seed(0))
        for suffix, temperature in (("", 0.0), ("_sampled", 1.0)):
            comps = complete(
                model, tok, prompts, self.max_new_tokens, uses_eos=True, temperature=temperature,
                uniforms=u if temperature else None, device=device,
                tool=getattr(self, "tool", None), tool_trigger=getattr(self, "tool_trigger", None),
            )[0]  # fmt: skip
            right = self.correct(prompts, comps)
            worked = [thinks(c) for c in comps]
            out[f"eval_acc{suffix}"] = sum(right) / len(prompts)
            if not suffix:
                out["eval_r"] = sum(total_reward(self.reward_funcs, prompts, comps)[0]) / len(prompts)
            out[f"eval_len{suffix}"] = sum(len(c) for c in comps) / len(prompts)
            out[f"eval_think_frac{suffix}"] = sum(worked) / len(prompts)
            for fmt, name in ((True, "think"), (False, "direct")):
                rs = [r for r, w in zip(right, worked, strict=True) if w == fmt]
                out[f"eval_acc_{name}{suffix}"] = sum(rs) / len(rs) if rs else float("nan")
            out.update(self.format_columns(comps, right, suffix))
        return out

    def format_columns(self, comps, right, suffix):
        """More held-out columns from the completions and whether each is right (chain_tool's formats)."""
        return {}


class ChainControlTask(ChainTask):
    """The control: the same chains, but an SFT policy that saw no worked solution (--task
    tasks.chain:ChainControlTask). What GRPO reaches when it cannot lengthen its answer."""

    name = "chain_control"
    worked_frac = 0.0

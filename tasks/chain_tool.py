"""--task chain_tool: the chain task with a calculator the policy may call, "7*3#" and the environment writes
"21" (ChainToolTask, docs/tools.md).

    python train_grpo.py --task chain_tool
    python train_grpo.py --task tasks.chain_tool:ChainToolControlTask   # the control: every call answered "?"
"""

import re

import torch

from model import END
from tasks.chain import ChainTask, chain_steps, chain_worked, thinks
from tasks.rollout import sft_batch_from_examples

# Inside the scratchpad a step is worked in the head, "7*3=21", or handed to the calculator, "7*3#" after
# which the environment writes "21" and the policy goes on with ";".
_TOOL_STEP = r"\d+[*+]\d+(=\d+|#(\d+|\?))"
_TOOL_FORM = re.compile(rf"^(<{_TOOL_STEP}(;{_TOOL_STEP})*>)?\d+{re.escape(END)}$")
_CALL = re.compile(r"(\d+)([*+])(\d+)#$")


def calculator(prompt, text):
    """chain_tool's tool: the value of the call "a*b#" or "a+b#" that ends text, or "?" for a malformed call."""
    m = _CALL.search(text)
    if m is None:
        return "?"
    a, op, b = int(m[1]), m[2], int(m[3])
    return str(a * b if op == "*" else a + b)


def chain_tool_worked(prompt):
    """The worked solution of a chain prompt with every step handed to the calculator (without the end token)."""
    steps = chain_steps(prompt)
    return "<" + ";".join(f"{e}#{v}" for e, v in steps) + ">" + str(steps[-1][1])


def calls(completion):
    """How many times a chain_tool completion called the calculator."""
    return completion.count("#")


class ChainToolTask(ChainTask):
    """--task chain_tool: the chain task with a calculator the policy may call (docs/tools.md). The tool: when
    the policy writes "#", the calculator replies with the value of the step a*b or a+b before it ("?" for a
    malformed call). Three formats: direct "56|", worked in the head "<7*3=21;...>56|", worked with the
    calculator "<7*3#21;21+5#26;...>56|" (the digits after "#" are the environment's).

    Reward as chain's: the final answer (1.0) and well-formedness (0.1, the same for every format), never the
    tool use. SFT data (sft_examples): 50% practice facts, 18% worked solutions of shorter chains (the first 2 or
    3 steps of a chain, "7*3+5=" -> "<7*3=21;21+5=26>26|"), and 32% full chains, a quarter of them worked (8%
    of the rows) and the rest direct answers (24%). A small share of the worked full chains (sft_tool_frac,
    12% of them: 0.96% of the rows) call the calculator on every step; its replies are context, never SFT
    targets. SFT runs 3500 steps (sft_steps) in packed rows: copying a result (into the next step, into the
    answer) is learned there, on the shorter chains mostly, and RL keeps what SFT taught (docs/tools.md).
    """

    name = "chain_tool"
    chars = ChainTask.chars + "#?"
    rl_steps = 60
    sft_steps = 3500
    # the held-out chains start from the SFT policy's greedy answer, which should be a direct one (right about
    # 10-20% of the time); copying is practised on worked shorter chains, whose prompts are not of that kind,
    # so practice does not make the policy work the full chains in its head before RL
    fact_frac = 0.50
    short_frac = 0.18  # worked 2- and 3-step chains (two thirds 3-step)
    worked_frac = 0.25  # of the full chains: 0.32 / 4 = 8% of the rows, the direct answers 24%
    sft_tool_frac = 0.12  # of the worked full chains: 0.08 * 0.12 = 0.96% of the rows
    tool_trigger = "#"

    def tool(self, prompt, text):
        return calculator(prompt, text)

    def well_formed(self, prompts, completions):
        return [float(bool(_TOOL_FORM.match(c))) for c in completions]

    def sft_examples(self, g, n):
        """n (prompt, completion) rows: practice facts, worked shorter chains, full chains worked (with the
        calculator or in the head) or answered directly (the class docstring)."""
        rows = []
        for p in self.sample_prompts(g, n):
            kind, sub, tool = torch.rand(3, generator=g).tolist()
            step = int(torch.randint(4, (1,), generator=g))
            if kind < self.fact_frac:  # one step of the chain as a fact of its own
                expr, value = chain_steps(p)[step]
                rows.append((expr + "=", f"{value}{END}"))
            elif kind < self.fact_frac + self.short_frac:  # its first 3 (or 2) steps, worked in the head
                k = 3 if sub < 2 / 3 else 2
                short = "".join(re.findall(r"\d+|[*+]", p)[: 2 * k + 1]) + "="
                rows.append((short, chain_worked(short) + END))
            elif (kind - self.fact_frac - self.short_frac) / (1 - self.fact_frac - self.short_frac) < self.worked_frac:
                rows.append((p, (chain_tool_worked(p) if tool < self.sft_tool_frac else chain_worked(p)) + END))
            else:
                rows.append((p, f"{chain_steps(p)[-1][1]}{END}"))
        return rows

    def sft_batch(self, g, n, tok):
        # the working calculator, also for the control: its SFT data is chain_tool's. Packed rows: three quarters
        # of the rows are facts and direct answers, far shorter than a worked one; the same loss on a third of the
        # positions
        return sft_batch_from_examples(
            self.sft_examples(g, n), tok, calculator, self.tool_trigger, pack=self.block_size
        )

    def format_columns(self, comps, right, suffix):
        """Held-out columns beside chain's (eval_acc_think there counts every worked solution): the share
        of completions that called the calculator, the accuracy of each format (tool, head, direct)."""
        kinds = ["tool" if calls(c) else "head" if thinks(c) else "direct" for c in comps]
        out = {f"eval_tool_frac{suffix}": kinds.count("tool") / len(comps)}
        for kind in ("tool", "head", "direct"):
            rs = [r for r, k in zip(right, kinds, strict=True) if k == kind]
            out[f"eval_acc_{kind}{suffix}"] = sum(rs) / len(rs) if rs else float("nan")
        return out


class ChainToolControlTask(ChainToolTask):
    """The control (--task tasks.chain_tool:ChainToolControlTask): chain_tool's SFT data and policy, but the
    calculator is switched off: every call is answered "?". Whatever the policy gains here, the calculator
    did not give it."""

    name = "chain_tool_control"

    def tool(self, prompt, text):
        return "?"

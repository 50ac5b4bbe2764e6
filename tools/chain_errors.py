"""Where a chain or chain_tool policy's held-out errors come from: its greedy completions, counted by kind.

    python tools/chain_errors.py out/chain_tool_s1/grpo_ckpt.pt out/chain_tool_s1/policy.pth --task chain_tool

Each checkpoint (a train_grpo.py grpo_ckpt.pt, or an SFT policy.pth) is decoded greedily on the task's 500
held-out chains, with the task's tool when it has one, and every wrong completion gets one kind (the first
that applies, reading left to right; chain_error below). Prints a markdown table, one row per checkpoint,
and a second one: held-out accuracy, calls per completion, and for each step kind (multiplication,
addition) the share of the scratchpad steps written that were handed to the calculator (--tool-cost runs).
"""

import argparse
import collections
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from model import END, GPT, CharTokenizer, GPTConfig  # noqa: E402
from tasks import complete, load_task  # noqa: E402
from tasks.chain import chain_answer, chain_steps, thinks  # noqa: E402
from utils.ckpt import load_checkpoint  # noqa: E402

KINDS = {
    "truncated": "no end token within max_new_tokens",
    "direct": "a direct answer, wrong",
    "malformed": "a scratchpad that does not parse (a step without '=' or '#', '+5=' without its operand, ...)",
    "steps": "the steps of another chain: a step skipped, added, or an operand or operator of the prompt miscopied",
    "carry": "a step writes another left operand than the value the step before wrote (its result or the reply)",
    "head_math": "a step worked in the head with a wrong result",
    "tool_error": "the calculator answered '?' (a malformed call; the control's calculator is off)",
    "answer_copy": "the final answer differs from the last step's result",
}
_STEP = re.compile(r"^(\d*)([*+])(\d+)([=#])(\d+|\?)$")


def chain_error(prompt, completion):
    """The kind (a KINDS key) of a wrong chain or chain_tool completion; None when it is right."""
    steps = chain_steps(prompt)
    if chain_answer(completion) == str(steps[-1][1]):
        return None
    if not completion.endswith(END):
        return "truncated"
    if not thinks(completion):
        return "direct"
    m = re.match(r"^<([^<>]*)>(\d+)" + re.escape(END) + "$", completion)
    parts = m[1].split(";") if m else []
    written = [_STEP.match(s) for s in parts]
    if m is None or not all(written):
        return "malformed"
    if len(written) != len(steps):
        return "steps"
    prev = re.match(r"\d+", prompt)[0]  # the chain's first number
    for w, (expr, _) in zip(written, steps, strict=True):
        a, op, b, kind, v = w.groups()
        if not a and kind == "=":  # "+5=26": only the calculator continues from the last number
            return "malformed"
        if (op, b) != re.match(r"\d+([*+])(\d+)$", expr).groups():
            return "steps"
        if a and a != prev:  # no a: a call "+5#" that continues from prev
            return "carry"
        a = a or prev
        if v == "?":
            return "tool_error"
        if kind == "=" and int(v) != (int(a) * int(b) if op == "*" else int(a) + int(b)):
            return "head_math"
        prev = v
    return "answer_copy" if m[2] != prev else "steps"


def tool_share(completions):
    """{op: (steps handed to the calculator, steps written)} over every scratchpad step that parses."""
    out = {"*": [0, 0], "+": [0, 0]}
    for c in completions:
        m = re.match(r"^<([^<>]*)>", c)
        for part in m[1].split(";") if m else []:
            w = _STEP.match(part)
            if w:
                out[w[2]][0] += w[4] == "#"
                out[w[2]][1] += 1
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("ckpts", nargs="+", help="grpo_ckpt.pt or policy.pth files")
    parser.add_argument("--task", default="chain_tool", help="chain, chain_tool or a task spec of their kind")
    args = parser.parse_args()
    task = load_task(args.task)
    tok = CharTokenizer(task.chars)
    print("| checkpoint | wrong | " + " | ".join(KINDS) + " |")
    print("|---" * (len(KINDS) + 2) + "|")
    rows = []
    for path in args.ckpts:
        ck = load_checkpoint(path)
        model = GPT(GPTConfig(**ck["model_config"]))
        model.load_state_dict(ck["policy"] if "policy" in ck else ck["model"])
        tool = dict(tool=getattr(task, "tool", None), tool_trigger=getattr(task, "tool_trigger", None))
        comps = complete(model, tok, task.heldout, task.max_new_tokens, uses_eos=True, **tool)[0]
        kinds = collections.Counter(chain_error(p, c) for p, c in zip(task.heldout, comps, strict=True))
        wrong = len(comps) - kinds[None]
        print(f"| {path} | {wrong} | " + " | ".join(str(kinds[k]) for k in KINDS) + " |")
        share = {op: f"{a / n:.3f} of {n}" if n else "-" for op, (a, n) in tool_share(comps).items()}
        calls = sum(c.count("#") for c in comps) / len(comps)
        rows.append(f"| {path} | {kinds[None] / len(comps):.3f} | {calls:.2f} | {share['*']} | {share['+']} |")
    print(
        "\n| checkpoint | held-out acc | calls per completion | `*` steps to the calculator | `+` steps to the calculator |"
    )
    print("|---|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

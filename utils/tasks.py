"""Tasks: what the policy is asked, how its answers are scored, the SFT data and the held-out evaluation.

Pick one with --task:
  arithmetic               built in: "37+48=" -> "85|" ("|" is the end token), verifiable rewards as in
                           DeepSeek-R1. Operands 10..99; the 8100 problems are split once, with a fixed seed
                           that never depends on --seed, into 7600 for training and 500 held out.
  chain                    built in: "7*3+5*2+4=" -> "<7*3=21;21+5=26;26*2=52;52+4=56>56|" or "56|", a
                           calculator chain evaluated left to right, where working it out pays (ChainTask).
  chain_tool               built in: the chain task with a calculator the policy may call, "7*3#" and the
                           environment writes "21" (ChainToolTask, docs/tools.md)
  shakespeare              built in: a 32-character window of tiny Shakespeare as prompt, a fixed-length
                           32-character completion scored by `gold_score` (the reward-model issue learns it).
                           The first 90% of the text gives training prompts, the last 10% held-out ones.
  path/to/my_task.py:Cls   your class in a file (or an object of it), e.g. examples/reverse_task.py:ReverseTask
  some.module:Name         the same from an importable module
  jsonl:data.jsonl         rows {"prompt": str, "answer": str}; jsonl:train.jsonl,heldout.jsonl to name the
                           held-out rows (JsonlTask below says how it splits, scores and sizes)

A class is built with no arguments, or with data_path=<--data> when --data is given.

The task interface (any object with these attributes; load_task checks them and fills in the defaults)
----------------------------------------------------------------------------------------------------
Required
  name            str: the run's name (out/<name>, logs, checkpoints)
  max_new_tokens  int: the completion length cap (--max-new-tokens overrides it)
  reward_funcs    [(name, f, weight)], f(prompts, completions) -> list[float], one finite number per
                  completion; the reward is the weighted sum (total_reward)
  sample_prompts  (g: torch.Generator, n) -> list[str]: n training prompts, drawn with g only
  heldout         list[str]: the held-out prompts the evaluation uses
                  (prompts may differ in length: `complete` left-pads them and masks the padding)
Optional (default)
  uses_eos        (True) completions stop at the end token; False: every completion is max_new_tokens long
  rl_steps        (200) the default --steps
  sft_steps       (1500) the default --sft-steps (a model trained from scratch)
  correct         (None) f(prompts, completions) -> list of 0.0/1.0: gives eval_acc
  evaluate        (greedy decoding of `heldout`: eval_r = mean total reward, eval_acc = mean `correct`
                  when there is one) (model, tok, device) -> {"eval_...": float}
  step_metrics    (None) (prompts, completions) -> {column: float}: extra per-step columns of the
                  rollout (chain: think_frac, len_right, len_wrong), defined in utils/metrics.py
  tool            (None) f(prompt, text) -> str: an environment the policy may call (multi-turn rollouts).
                  When the policy writes tool_trigger, f gets the prompt and the completion so far (the
                  trigger last; earlier replies included) and returns its reply, which is written into the
                  completion token by token, in the context of every later token and in no loss, normaliser,
                  column or SFT target (the environment mask, docs/tools.md); reward functions see the whole
                  text, replies included. A reply counts against max_new_tokens. A tool that raises, returns a
                  non-string or characters the vocabulary lacks stops the run (exit 2, one line).
  tool_trigger    (None) the one character (one token) that ends a call; required with tool
  Only for a model trained from scratch (--init-from scratch, a character tokenizer):
  chars           (None) every character prompts and completions use (the end token "|" is added)
  block_size      (longest of `heldout` and 1024 sampled training prompts, + max_new_tokens) the context
  sft_examples    (None) (g, n) -> [(prompt, completion)], the completion ending with END ("|") when the
                  task stops; SFT learns the completion tokens, never the prompt's
  sft_batch       (built from sft_examples) (g, n, tok) -> (x, y) (n, T) long, -1 in y is ignored: full
                  control over the SFT data (shakespeare trains on plain text windows)
  sft_progress    (None) (model, tok, device) -> float: SFT stops once it reaches --sft-target-acc
                  (arithmetic: greedy accuracy on 500 training problems, so SFT is partial)

A completion, as reward functions see it, is the decoded text up to and including the end token, which
always reads END ("|") whatever the tokenizer (others render a literal "|" as "¦"); with uses_eos=False,
the whole fixed-length text. A completion that never stopped has no END at its end: it was cut off.
"""

import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import numbers
import os
import re
import sys

import torch

from grpo import completion_mask
from model import END, left_pad

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
SHAKESPEARE = os.path.join(DATA_DIR, "tinyshakespeare.txt")


class TaskError(ValueError):
    """A task that cannot be loaded or used; the message is one line naming the file (and line)."""


# -----------------------------------------------------------------------------
# arithmetic


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


# -----------------------------------------------------------------------------
# shakespeare

# The gold rule: a small lexicon of pleasant and grim words. g(text) = #pleasant - #grim whole words
# (lower-cased, a word cut off by the end of the completion does not count). Readable, and common
# enough in Shakespeare that a 32-character completion hits one often.
PLEASANT = set(
    "love loves loved lovely sweet fair good joy joyful happy gentle noble dear kind grace gracious peace "
    "heaven hope merry smile honour honest best friend friends true beauty blessed bless glad delight "
    "comfort pretty rich fortune pleasure wise virtue mercy".split()
)
GRIM = set(
    "death die dies dead blood bloody kill killed grief woe hate fear tears sorrow curse cursed grave "
    "poison murder evil villain war sick foul base slain traitor enemy wretch wretched hell shame "
    "weep false cruel vile plague".split()
)
_WORD = re.compile(r"[a-z']+")


def gold_score(text):
    """#pleasant - #grim whole words in text (the last word only counts if followed by a non-letter)."""
    words = _WORD.findall(text.lower())
    if words and text and text[-1].isalpha():  # the completion ends mid-word: drop the fragment
        words = words[:-1]
    return float(sum(w in PLEASANT for w in words) - sum(w in GRIM for w in words))


def lexicon_reward(prompts, completions):
    """The gold rule on the completion alone."""
    return [gold_score(c) for c in completions]


class ShakespeareTask:
    name = "shakespeare"
    prompt_len = 32
    max_new_tokens = 32  # fixed length: no end token is used, every completion has 32 tokens
    block_size = 64
    uses_eos = False
    rl_steps = 100  # default --steps: against the learned reward model, gold peaks early and then falls (README)
    reward_funcs = [("lexicon", lexicon_reward, 1.0)]
    correct = sft_examples = sft_progress = None  # no right answer; SFT is language modelling (sft_batch)

    def __init__(self, data_path=SHAKESPEARE):
        if not os.path.exists(data_path):
            raise FileNotFoundError(f"data file {data_path} not found (the repo ships data/tinyshakespeare.txt)")
        with open(data_path) as f:
            self.text = f.read()
        self.chars = "".join(sorted(set(self.text) - {END}))
        n = int(0.9 * len(self.text))
        self.train_text, self.heldout_text = self.text[:n], self.text[n:]
        g = torch.Generator().manual_seed(1234)
        starts = torch.randint(len(self.heldout_text) - self.prompt_len, (128,), generator=g).tolist()
        self.heldout = [self.heldout_text[s : s + self.prompt_len] for s in starts]

    def sample_prompts(self, g, n):
        starts = torch.randint(len(self.train_text) - self.prompt_len, (n,), generator=g).tolist()
        return [self.train_text[s : s + self.prompt_len] for s in starts]

    def sft_batch(self, g, batch_size, tok):
        """(x, y) for next-token language modelling on random block_size windows of the training text."""
        T = self.block_size
        starts = torch.randint(len(self.train_text) - T - 1, (batch_size,), generator=g).tolist()
        rows = torch.tensor([tok.encode(self.train_text[s : s + T + 1]) for s in starts])
        return rows[:, :-1], rows[:, 1:]

    def evaluate(self, model, tok, device, n=None, temperature=1.0):
        """Mean rule score (the gold score) on the held-out prompts, sampled at `temperature` with fixed
        random numbers."""
        prompts = self.heldout[:n]
        u = torch.rand(len(prompts), self.max_new_tokens, generator=torch.Generator().manual_seed(0))
        comps = complete(
            model, tok, prompts, self.max_new_tokens, uses_eos=False, temperature=temperature, uniforms=u, device=device
        )[0]
        return {"eval_r": sum(total_reward(self.reward_funcs, prompts, comps)[0]) / len(prompts)}


# -----------------------------------------------------------------------------
# chain: a calculator chain, where working it out pays (R1-Zero at toy scale)

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
    utils.tasks:ChainControlTask). What GRPO reaches when it cannot lengthen its answer."""

    name = "chain_control"
    worked_frac = 0.0


# chain_tool: the chain task with a calculator. Inside the scratchpad a step is worked in the head, "7*3=21",
# or handed to the calculator, "7*3#" after which the environment writes "21" and the policy goes on with ";".
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
    """The control (--task utils.tasks:ChainToolControlTask): chain_tool's SFT data and policy, but the
    calculator is switched off: every call is answered "?". Whatever the policy gains here, the calculator
    did not give it."""

    name = "chain_tool_control"

    def tool(self, prompt, text):
        return "?"


# -----------------------------------------------------------------------------
# JSONL: prompt/answer rows from a file


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


# -----------------------------------------------------------------------------
# loading a task by name, file, module or data file

TASKS = {"arithmetic": ArithmeticTask, "shakespeare": ShakespeareTask, "chain": ChainTask, "chain_tool": ChainToolTask}
TASKS_WITH_DATA = {"shakespeare"}  # the built-in tasks that read --data
SPEC_FORMS = (
    "arithmetic, shakespeare, chain, chain_tool, path/to/my_task.py:Class, some.module:Name, "
    "jsonl:data.jsonl[,heldout.jsonl]"
)


def load_task(spec, data=None):
    """The task named by spec (the --task forms above), checked and with the optional attributes'
    defaults filled in. data (--data) goes to the class as data_path=. Raises TaskError (one line)."""
    if spec in TASKS:
        if data and spec not in TASKS_WITH_DATA:
            raise TaskError(f"--data does not apply to --task {spec}: it reads no data file")
        try:
            return TASKS[spec](**({"data_path": data} if data else {}))
        except FileNotFoundError as e:
            raise TaskError(str(e)) from None
    if spec.startswith("jsonl:"):
        paths = spec[len("jsonl:") :].split(",")
        if data:
            raise TaskError(f"--data does not apply to {spec}: the spec names its files")
        if len(paths) > 2 or not all(paths):
            raise TaskError(f"--task {spec}: expected jsonl:train.jsonl or jsonl:train.jsonl,heldout.jsonl")
        return JsonlTask(*paths)
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise TaskError(f"unknown --task {spec!r}: use one of {SPEC_FORMS}")
    if where.endswith(".py") or os.sep in where or "/" in where:
        source, module = where, _import_file(where)
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as e:
            if e.name is None or not (where == e.name or where.startswith(e.name + ".")):
                raise  # the module exists, something it imports does not: the traceback says what
            raise TaskError(f"--task {spec}: no module named {e.name!r} on the Python path") from None
        except SyntaxError as e:
            raise TaskError(f"{e.filename}:{e.lineno}: syntax error: {e.msg}") from None
        source = getattr(module, "__file__", None) or where
    if not hasattr(module, attr):
        found = sorted(n for n, v in vars(module).items() if isinstance(v, type) and v.__module__ == module.__name__)
        raise TaskError(f"{source}: no class or object named {attr!r} (classes there: {', '.join(found) or 'none'})")
    obj = getattr(module, attr)
    if isinstance(obj, type):
        try:
            line = inspect.getsourcelines(obj)[1]
            source = f"{source}:{line}"
        except (OSError, TypeError):  # a class made at run time has no source lines: name the file alone
            pass
        if data and not _takes_data_path(obj):
            raise TaskError(f"{source}: --data is given but {attr}() takes no data_path= argument to pass it to")
        obj = obj(**({"data_path": data} if data else {}))
    elif data:
        raise TaskError(f"{source}: --data is given but {attr} is an object, not a class to pass it to")
    check_task(obj, f"{source}: {attr}")
    return with_defaults(obj)


def _takes_data_path(cls):
    """Whether cls(data_path=...) is a valid call (a data_path parameter, or **kwargs)."""
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let the call itself decide
        return True
    return any(p.name == "data_path" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _import_file(path):
    if not os.path.isfile(path):
        raise TaskError(f"{path}: file not found")
    name = "nanogrpo_task_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise TaskError(f"{path}: not a Python file (name it *.py)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickle look classes up by module name
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        del sys.modules[name]
        raise TaskError(f"{e.filename}:{e.lineno}: syntax error: {e.msg}") from None
    return module


def _is_number(x):
    return isinstance(x, numbers.Real) and math.isfinite(x)


def check_task(task, source):
    """Raise TaskError (one line, starting with source) unless task has the required attributes of the
    right types (and any optional ones it sets), and sample_prompts and the reward functions answer."""
    missing = [
        a for a in ("name", "max_new_tokens", "reward_funcs", "sample_prompts", "heldout") if not hasattr(task, a)
    ]
    if missing:
        raise TaskError(f"{source}: missing the required attribute(s) {', '.join(missing)}")

    def bad(what):
        raise TaskError(f"{source}: {what}")

    if not isinstance(task.name, str) or not task.name or "/" in task.name or os.sep in task.name:
        bad(f"name must be a non-empty string without a path separator, not {task.name!r}")
    for attr in ("max_new_tokens", "rl_steps", "sft_steps", "block_size"):
        v = getattr(task, attr, 1)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            bad(f"{attr} must be a positive int, not {v!r}")
    if not isinstance(getattr(task, "uses_eos", True), bool):
        bad(f"uses_eos must be True or False, not {task.uses_eos!r}")
    chars = getattr(task, "chars", None)
    if chars is not None and (not isinstance(chars, str) or END in chars):
        bad(f"chars must be a string without {END!r} (the end token's), not {chars!r:.40}")
    tool, trigger = getattr(task, "tool", None), getattr(task, "tool_trigger", None)
    if tool is not None and not (isinstance(trigger, str) and len(trigger) == 1 and trigger != END):
        bad(f"a tool needs tool_trigger, the one character that ends a call, not {trigger!r:.40}")
    for attr in (
        "sample_prompts",
        "correct",
        "evaluate",
        "sft_examples",
        "sft_batch",
        "sft_progress",
        "step_metrics",
        "tool",
    ):
        v = getattr(task, attr, None)
        if (attr == "sample_prompts" or v is not None) and not callable(v):
            bad(f"{attr} must be callable, not {v!r:.40}")
    rf = task.reward_funcs
    if not isinstance(rf, (list, tuple)) or not rf:
        bad(f"reward_funcs must be a non-empty list of (name, function, weight), not {rf!r:.60}")
    for i, entry in enumerate(rf):
        ok = isinstance(entry, (list, tuple)) and len(entry) == 3
        if not (ok and isinstance(entry[0], str) and callable(entry[1]) and _is_number(entry[2])):
            bad(f"reward_funcs[{i}] must be (name str, function, finite weight), not {entry!r:.60}")
    names = [e[0] for e in rf]
    if len(set(names)) < len(names):
        bad(f"reward_funcs names must differ (each is logged as r_<name>): {names}")
    h = task.heldout
    if not isinstance(h, (list, tuple)) or not h or not all(isinstance(p, str) and p for p in h):
        bad(f"heldout must be a non-empty list of non-empty strings, not {h!r:.60}")
    p = task.sample_prompts(torch.Generator().manual_seed(0), 2)
    if not isinstance(p, list) or len(p) != 2 or not all(isinstance(x, str) and x for x in p):
        bad(f"sample_prompts(g, 2) must return a list of 2 non-empty strings, not {p!r:.60}")
    total_reward(rf, [h[0], h[0]], ["", END])  # each function answers with 2 finite numbers, or TaskError


def with_defaults(task):
    """Set the optional attributes task lacks to their defaults (the table above); returns task."""
    defaults = {"uses_eos": True, "rl_steps": 200, "sft_steps": 1500, "correct": None, "chars": None}
    defaults.update(sft_examples=None, sft_batch=None, sft_progress=None, tool=None, tool_trigger=None)
    for attr, default in defaults.items():
        if not hasattr(task, attr):
            setattr(task, attr, default)
    if task.sft_batch is None and task.sft_examples is not None:
        task.sft_batch = lambda g, n, tok: sft_batch_from_examples(
            task.sft_examples(g, n), tok, task.tool, task.tool_trigger
        )
    if not hasattr(task, "evaluate"):
        task.evaluate = functools.partial(evaluate_greedy, task)
    if not hasattr(task, "block_size"):
        seen = list(task.heldout) + task.sample_prompts(torch.Generator().manual_seed(0), 1024)
        task.block_size = max(len(p) for p in seen) + task.max_new_tokens
    return task


def check_scratch(task, source):
    """Raise TaskError unless task can train a model from scratch: chars, SFT data, and every character
    of the held-out prompts and of a few SFT examples in chars."""
    if task.chars is None:
        raise TaskError(f"{source}: training from scratch needs chars (every character the task uses)")
    if task.sft_batch is None:
        raise TaskError(f"{source}: training from scratch needs SFT data: sft_examples(g, n) or sft_batch(g, n, tok)")
    texts = list(task.heldout)
    if task.sft_examples is not None:
        for prompt, completion in task.sft_examples(torch.Generator().manual_seed(0), 16):
            texts += [prompt, completion.removesuffix(END)]
    extra = sorted(set("".join(texts)) - set(task.chars))
    if extra:
        raise TaskError(f"{source}: characters {''.join(extra)!r} are missing from chars")


# -----------------------------------------------------------------------------
# rollouts, evaluation, SFT batches and the reward


def encode_prompts(tok, prompts, max_new_tokens=0, block_size=None):
    """Token ids of each prompt. Raises TaskError (one line) for a prompt the tokenizer cannot write, or,
    given block_size, one whose tokens + max_new_tokens do not fit in it (training needs them to)."""
    rows = []
    for p in prompts:
        try:
            rows.append(tok.encode(p))
        except (KeyError, ValueError) as e:  # a character the vocabulary lacks
            raise TaskError(f"the prompt {p!r:.40} does not fit the model's vocabulary ({str(e)[:80]})") from None
    longest = max(len(r) for r in rows)
    if block_size is not None and longest + max_new_tokens > block_size:
        raise TaskError(
            f"a prompt of {longest} tokens + --max-new-tokens {max_new_tokens} exceeds the model's block_size {block_size}"
        )
    return rows


def complete(
    model,
    tok,
    prompts,
    max_new_tokens,
    *,
    uses_eos,
    temperature=0.0,
    uniforms=None,
    device="cpu",
    block_size=None,
    tool=None,
    tool_trigger=None,
):
    """Complete prompts of any lengths: left-padded, model.generate, decoded as reward functions see them.

    temperature 0 is greedy; uniforms (B, max_new_tokens) drive sampling (default torch.rand); block_size:
    refuse (TaskError) prompts whose tokens + max_new_tokens exceed it (see encode_prompts). tool,
    tool_trigger: the task's (the interface above): its replies are written into the completions, and a
    bad reply raises TaskError (one line naming the prompt and the call).
    Returns (texts [B], seq (B, P + T) long prompt then completion, prompt_mask (B, P) long 1 = real
    prompt token, mask (B, T) float 1 = completion token: up to and including the end token, or all,
    env_mask (B, T) float 1 = a token the tool wrote (inside mask; all 0 without a tool)).
    """
    rows = encode_prompts(tok, prompts, max_new_tokens, block_size)
    idx, prompt_mask = left_pad(rows, tok.pad_id)  # (B, P)
    idx, prompt_mask = idx.to(device), prompt_mask.to(device)
    eos_id = tok.eos_id if uses_eos else None
    # an all-ones mask (every prompt the same length) takes generate's unpadded path: the same numbers
    kw = dict(temperature=temperature, eos_id=eos_id, uniforms=uniforms, attention_mask=prompt_mask)
    if tool is None:
        out, _ = model.generate(idx, max_new_tokens, **kw)  # (B, T)
        env = torch.zeros(out.shape, device=out.device)
    else:
        call = functools.partial(_call_tool, tool, tok, prompts)
        out, _, env = model.generate(idx, max_new_tokens, tool=call, trigger_id=trigger_id(tok, tool_trigger), **kw)
    if uses_eos:
        texts = [tok.decode_completion(r) for r in out.tolist()]
        mask = completion_mask(out, eos_id)  # (B, T) real tokens up to and including the end token
    else:
        texts = [tok.decode(r) for r in out.tolist()]
        mask = torch.ones_like(out, dtype=torch.float)
    return texts, torch.cat([idx, out], dim=1), prompt_mask, mask, env * mask


def trigger_id(tok, trigger):
    """The token id of a tool's trigger; TaskError unless it is exactly one token."""
    try:
        ids = tok.encode(trigger)
    except (KeyError, ValueError):
        ids = []
    if len(ids) != 1:
        raise TaskError(f"tool_trigger {trigger!r} must be one token of the model's vocabulary")
    return ids[0]


def _call_tool(tool, tok, prompts, i, ids):
    """generate's tool hook: the task's tool(prompt, text so far) -> reply str, as token ids. Raises TaskError
    (one line naming the prompt and the call) when it raises, returns a non-string or unwritable characters."""
    text = tok.decode(ids)
    where = (
        f"the tool {getattr(tool, '__qualname__', repr(tool))}, called on prompt {prompts[i]!r:.40} after {text!r:.60}"
    )
    try:
        reply = tool(prompts[i], text)
    except Exception as e:  # any failure of user code: reported in one line, the run stops (never hidden)
        raise TaskError(f"{where}, raised {type(e).__name__}: {str(e)[:80]}") from None
    if not isinstance(reply, str):
        raise TaskError(f"{where}, returned {reply!r:.40}, not a string")
    try:
        out = tok.encode(reply)
    except (KeyError, ValueError):
        out = None
    if out is None or (tok.eos_id is not None and tok.eos_id in out):
        raise TaskError(f"{where}, returned {reply!r:.40}: characters the model's vocabulary lacks")
    return out


def evaluate_greedy(task, model, tok, device, prompts=None):
    """The default evaluate: greedy completions of prompts (default task.heldout), all in one batch.
    Returns {"eval_acc": mean correct (only when the task has `correct`), "eval_r": mean total reward}."""
    prompts = task.heldout if prompts is None else prompts
    tools = dict(tool=getattr(task, "tool", None), tool_trigger=getattr(task, "tool_trigger", None))
    comps = complete(model, tok, prompts, task.max_new_tokens, uses_eos=task.uses_eos, device=device, **tools)[0]
    out = {}
    if getattr(task, "correct", None) is not None:
        out["eval_acc"] = sum(task.correct(prompts, comps)) / len(prompts)
    out["eval_r"] = sum(total_reward(task.reward_funcs, prompts, comps)[0]) / len(prompts)
    return out


def sft_batch_from_examples(examples, tok, tool=None, tool_trigger=None, pack=None):
    """[(prompt, completion)] -> (x, y) (n, T) long for next-token SFT on the completions: y holds the
    completion's tokens (a trailing END becomes the end token) and -1 (ignored) over the prompt and the
    right padding; x is padded with the end token. With a tool, the tool's replies are context, never
    targets: after each tool_trigger the tool is called as in a rollout and its reply, which the completion
    must continue with (else TaskError), is -1 in y.

    pack=L: (x, y, segments) (R, L) instead, the examples in order, as many per row as fit in L positions,
    segments[r, t] the example's number in its row (-1 for the padding): GPT.forward(x, y, segments=...)
    gives the same loss as the unpacked (x, y), with a fraction of the positions when most examples are
    much shorter than the longest (chain_tool: about a third)."""
    rows, starts, envs = [], [], []
    for prompt, completion in examples:
        ids = tok.encode(prompt)
        starts.append(len(ids))
        body = completion.removesuffix(END)
        ids += tok.encode(body) + ([tok.eos_id] if completion.endswith(END) else [])
        rows.append(ids)
        envs.append(_reply_positions(prompt, body, tool, tool_trigger) if tool is not None else [])
    T = max(len(r) for r in rows)
    x = torch.full((len(rows), T - 1), tok.eos_id, dtype=torch.long)
    y = torch.full((len(rows), T - 1), -1, dtype=torch.long)
    for i, (r, P) in enumerate(zip(rows, starts, strict=True)):
        x[i, : len(r) - 1] = torch.tensor(r[:-1])
        y[i, P - 1 : len(r) - 1] = torch.tensor(r[P:])  # completion (+ end) only
        for k in envs[i]:  # the tool's reply: predicting it is not the policy's job
            y[i, P + k - 1] = -1
    return (x, y) if pack is None else _pack(x, y, [len(r) - 1 for r in rows], pack, tok.eos_id)


def _pack(x, y, lens, L, pad_id):
    """Rows i of (x, y), lens[i] positions each, laid end to end into rows of L positions (a new row when the
    next does not fit): (x, y, segments) (R, L), segments -1 over the padding."""
    if max(lens) > L:
        raise TaskError(f"an SFT example of {max(lens) + 1} tokens does not fit in {L} + 1 (pack=)")
    packs, used = [[]], 0
    for i, n in enumerate(lens):
        if used + n > L:
            packs.append([])
            used = 0
        packs[-1].append(i)
        used += n
    X = torch.full((len(packs), L), pad_id, dtype=torch.long)
    Y = torch.full((len(packs), L), -1, dtype=torch.long)
    S = torch.full((len(packs), L), -1, dtype=torch.long)
    for r, members in enumerate(packs):
        t = 0
        for j, i in enumerate(members):
            n = lens[i]
            X[r, t : t + n], Y[r, t : t + n], S[r, t : t + n] = x[i, :n], y[i, :n], j
            t += n
    return X, Y, S


def _reply_positions(prompt, text, tool, trigger):
    """Character positions of text that the tool writes (a character tokenizer: one token each), replaying
    the calls a rollout would make. Raises TaskError where text does not continue with the tool's reply."""
    out, k = [], 0
    while (k := text.find(trigger, k)) >= 0:
        reply = tool(prompt, text[: k + 1])
        if not text.startswith(reply, k + 1) and not (text[k + 1 :] and reply.startswith(text[k + 1 :])):
            raise TaskError(
                f"SFT example {prompt!r:.40} -> {text!r:.60}: after the call at {k} the tool replies {reply!r}"
            )
        out += range(k + 1, min(k + 1 + len(reply), len(text)))
        k += 1 + len(reply)
    return out


def total_reward(reward_funcs, prompts, completions):
    """Weighted sum of reward functions [(name, f, weight)]: (totals list, {name: per-completion list}).
    Raises TaskError naming a function that does not return one finite number per completion."""
    parts = {}
    for name, fn, _ in reward_funcs:
        r = fn(prompts, completions)
        if not isinstance(r, (list, tuple)) or len(r) != len(completions) or not all(map(_is_number, r)):
            code = getattr(getattr(fn, "__func__", fn), "__code__", None)  # a function or a bound method
            at = f" at {code.co_filename}:{code.co_firstlineno}" if code else ""
            raise TaskError(
                f"reward function {name!r} ({getattr(fn, '__qualname__', repr(fn))}{at}) returned {r!r:.60}: "
                f"expected a list of {len(completions)} finite numbers, one per completion"
            )
        parts[name] = r
    totals = [sum(w * parts[name][i] for name, _, w in reward_funcs) for i in range(len(completions))]
    return totals, parts


def add_task_args(parser):
    """--task, --reward, --data: the flags of the RL drivers (train_grpo.py, train_ppo.py) that pick what is learned."""
    parser.add_argument(
        "--task",
        default="arithmetic",
        help=f"what to learn: {SPEC_FORMS} (utils/tasks.py describes the task interface)",
    )
    parser.add_argument(
        "--reward",
        choices=["rm", "rule"],
        default=None,
        help="shakespeare: the learned reward model (gold = the lexicon rule, logged as gold_r) or the rule itself "
        "(default: rm with --init-from scratch, rule with a model you bring: the reward model learns from samples "
        "of the scratch SFT policy)",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="shakespeare: the text file (default data/tinyshakespeare.txt); a task class: passed as data_path=",
    )

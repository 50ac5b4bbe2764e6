"""The task interface: what the policy is asked, how its answers are scored, the SFT data and the held-out
evaluation (the table below); TaskError, total_reward and the checks of a task (check_task, run by
tasks/loader.py's load_task, and check_scratch, run by utils/sft.py before SFT from scratch).

    python train_grpo.py --task chain

Each built-in task is a file of this package (tasks/arithmetic.py, ...); tasks/rollout.py completes prompts
and builds SFT batches for any task.

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
                           held-out rows (tasks/jsonl.py's JsonlTask says how it splits, scores and sizes)

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

import math
import numbers
import os

import torch

from model import END

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


class TaskError(ValueError):
    """A task that cannot be loaded or used; the message is one line naming the file (and line)."""


def _is_number(x):
    return isinstance(x, numbers.Real) and math.isfinite(x)


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

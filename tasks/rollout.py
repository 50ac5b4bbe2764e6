"""Rollouts, evaluation and SFT batches for any task (the interface in tasks/base.py): prompts of any lengths
completed by the policy (with the task's tool, if it has one), the default greedy evaluation, and next-token
SFT batches from (prompt, completion) examples. The drivers and the task files call them:

    python train_grpo.py --task chain
"""

import functools

import torch

from grpo import completion_mask
from model import END, left_pad
from tasks.base import TaskError, total_reward


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
    return_logp=False,
):
    """Complete prompts of any lengths: left-padded, model.generate, decoded as reward functions see them.

    temperature 0 is greedy; uniforms (B, max_new_tokens) drive sampling (default torch.rand); block_size:
    refuse (TaskError) prompts whose tokens + max_new_tokens exceed it (see encode_prompts). tool,
    tool_trigger: the task's (the interface in tasks/base.py): its replies are written into the completions, and a
    bad reply raises TaskError (one line naming the prompt and the call).
    Returns (texts [B], seq (B, P + T) long prompt then completion, prompt_mask (B, P) long 1 = real
    prompt token, mask (B, T) float 1 = completion token: up to and including the end token, or all,
    env_mask (B, T) float 1 = a token the tool wrote (inside mask; all 0 without a tool)).
    return_logp: also the behaviour log-probs (B, T) float, last: log-probs of the sampled tokens under the
    distribution they were drawn from (model.generate's), 0 outside mask and on the tool's tokens.
    """
    rows = encode_prompts(tok, prompts, max_new_tokens, block_size)
    idx, prompt_mask = left_pad(rows, tok.pad_id)  # (B, P)
    idx, prompt_mask = idx.to(device), prompt_mask.to(device)
    eos_id = tok.eos_id if uses_eos else None
    # an all-ones mask (every prompt the same length) takes generate's unpadded path: the same numbers
    kw = dict(temperature=temperature, eos_id=eos_id, uniforms=uniforms, attention_mask=prompt_mask)
    if tool is None:
        out, logp = model.generate(idx, max_new_tokens, **kw)  # (B, T)
        env = torch.zeros(out.shape, device=out.device)
    else:
        call = functools.partial(_call_tool, tool, tok, prompts)
        out, logp, env = model.generate(idx, max_new_tokens, tool=call, trigger_id=trigger_id(tok, tool_trigger), **kw)
    if uses_eos:
        texts = [tok.decode_completion(r) for r in out.tolist()]
        mask = completion_mask(out, eos_id)  # (B, T) real tokens up to and including the end token
    else:
        texts = [tok.decode(r) for r in out.tolist()]
        mask = torch.ones_like(out, dtype=torch.float)
    result = texts, torch.cat([idx, out], dim=1), prompt_mask, mask, env * mask
    return (*result, logp.float() * mask * (1 - env)) if return_logp else result


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

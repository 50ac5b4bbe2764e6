"""
A small nanoGPT-style decoder-only GPT over characters, with KV-cache sampling for RL rollouts.

After karpathy/nanoGPT model.py: pre-LayerNorm blocks, causal self-attention with
F.scaled_dot_product_attention, GELU MLP, learned absolute positions, tied input/output embeddings.
What is added for RL:
  - CharTokenizer: a character vocabulary plus one end token (rendered "|", a character neither task
    uses), so a completion can stop.
  - GPT.generate: samples with a KV cache, returns the tokens *and* their log-probs under the sampling
    distribution (after temperature and top-k), stops each row at the end token. The cache (KVCache) is
    allocated once for prompt + completion and written in place; generate(compile=True) runs the
    per-token step through torch.compile (CUDA graphs on CUDA).
  - GPT.logprobs: the training-time forward, per-token log-probs of given completion tokens, with grad.
  - completion_logprobs_chunked: the same without the (N, T, V) logits, the output layer over chunks of
    positions, each recomputed in the backward (train_grpo.py --logits-chunk-size, docs/memory.md).
  - Prompts of different lengths: left_pad() them and pass the attention mask to forward, generate and
    completion_logprobs; position ids count real tokens only (mask.cumsum - 1, as Hugging Face's
    generate), pad keys are masked out, so a padded row gets the tokens and log-probs it would get alone.
  - Packed rows for SFT: forward(..., segments=) trains several short examples in one row, each attending
    only to itself with position ids from 0, the same numbers as one row each without the padding.
  - GPTConfig's bias / ln_bias / gelu options, so nanoGPT checkpoints (bias=True or False) and GPT-2's
    weights (bias, tanh GELU) load exactly (utils/init_from.py).

Run `python model.py` to sample from an untrained model (a smoke test).
"""

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from grpo import per_token_logps, token_entropy

END = "|"  # how the end token prints


class CharTokenizer:
    """Characters <-> ids; id len(chars) is the end token (also the padding id: pads are masked)."""

    def __init__(self, chars):
        assert END not in chars, f"{END!r} is reserved for the end token"
        self.chars = "".join(sorted(set(chars)))
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.eos_id = self.pad_id = len(self.chars)
        self.vocab_size = len(self.chars) + 1

    def encode(self, s):
        return [self.stoi[c] for c in s]

    def decode(self, ids):
        return "".join(END if i == self.eos_id else self.chars[i] for i in ids)

    def decode_completion(self, ids):
        """Text up to and including the first end token (what the reward functions see)."""
        out = []
        for i in ids:
            out.append(END if i == self.eos_id else self.chars[i])
            if i == self.eos_id:
                break
        return "".join(out)


@dataclass
class GPTConfig:
    block_size: int = 64  # longest prompt + completion
    vocab_size: int = 66
    n_layer: int = 3
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False  # biases in the Linear layers (nanoGPT's bias; GPT-2 has them)
    ln_bias: bool = True  # LayerNorm bias (nanoGPT's bias=False drops it too; our default keeps it)
    gelu: str = "none"  # "none": exact GELU (nanoGPT), "tanh": GPT-2's approximation (gelu_new)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, kv=None, attn_mask=None):
        """kv: None, or one layer's slice of a KVCache: (k_cache, v_cache, at, n_keys), (B, nh, size, hs) buffers;
        the T new keys and values are written in place at positions at ((T,) long), then the queries attend to
        the first n_keys cached positions. attn_mask: None (causal) or (B, 1, T, T_keys) bool, True where a
        query may attend."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if kv is not None:  # decoding: write the new keys into the cache, attend over its filled part
            k_cache, v_cache, at, n_keys = kv
            k_cache[:, :, at], v_cache[:, :, at] = k, v  # at: a slice (eager) or a (T,) tensor (compiled)
            k, v = k_cache[:, :, :n_keys], v_cache[:, :, :n_keys]  # (B, nh, n_keys, hs), views
        drop = self.dropout if self.training else 0.0
        # one new query may see every cached key: causal masking only for several queries (a cache starts empty)
        causal = attn_mask is None and T > 1
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop, is_causal=causal)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y)), (k, v)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.gelu = config.gelu

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate=self.gelu)))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.ln_bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.ln_bias)
        self.mlp = MLP(config)

    def forward(self, x, kv=None, attn_mask=None):
        a, kv = self.attn(self.ln_1(x), kv, attn_mask)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, kv


class KVCache:
    """Keys and values of every layer for `size` positions, allocated once per generate call: per layer a
    (B, nh, size, hs) buffer each, written in place at each new position and read over the filled part.
    It saves what growing the cache with torch.cat([past, new]) per layer and token costs: a copy of the
    whole cache and a fresh allocation each time (O(T^2) bytes moved over a completion; the largest op of
    cached decoding in a profile). n: positions filled."""

    def __init__(self, config, B, size, device, dtype=torch.float32):
        shape = (B, config.n_head, size, config.n_embd // config.n_head)
        # zeros, not empty: the compiled decode attends over unwritten positions with weight 0, and 0 * NaN = NaN
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.size, self.n = size, 0

    @classmethod
    def holding(cls, kv, config):
        """A KVCache of block_size positions holding kv, the (k, v) per layer GPT.body returns without a cache."""
        k0 = kv[0][0]  # (B, nh, n, hs)
        cache = cls(config, k0.size(0), config.block_size, k0.device, k0.dtype)
        for i, (k, v) in enumerate(kv):
            cache.k[i][:, :, : k.size(2)], cache.v[i][:, :, : v.size(2)] = k, v
        cache.n = k0.size(2)
        return cache


def sample(logits, u, temperature=1.0, top_k=None):
    """One token per row from logits (B, V) float with the uniforms u (B, 1) in [0, 1) (inverse CDF).
    Returns (token (B,), its log-prob (B,) under the distribution it was drawn from; greedy: the untempered)."""
    if temperature == 0:
        nxt = logits.argmax(-1)  # (B,)
        return nxt, F.log_softmax(logits, -1).gather(-1, nxt[:, None]).squeeze(-1)
    if temperature != 1.0:  # x / 1.0 == x exactly: skipping it changes no number
        logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    logp_all = F.log_softmax(logits, dim=-1)  # (B, V)
    cdf = logp_all.exp().cumsum(-1)  # (B, V)
    u = u * cdf[:, -1:]  # scale by the float total so u < cdf[-1]
    nxt = (cdf <= u).sum(-1).clamp(max=logits.size(-1) - 1)  # inverse CDF: the first cdf > u
    return nxt, logp_all.gather(-1, nxt[:, None]).squeeze(-1)


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.ln_bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied embeddings
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # scaled init of residual projections (GPT-2)
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())  # tied weights are counted once

    def body(self, idx, cache=None, attention_mask=None, segments=None):
        """Final hidden states (B, T, C), and the cache: the KVCache given, or without one the (k, v) per layer
        (pass it back to continue: it is copied once into a KVCache of block_size positions).

        cache: a KVCache, filled in place: by the prompt first (T tokens from position 0), then one token at
        a time. attention_mask: None (every token real) or (B, T_past + T), 1 for a real token and 0 for left
        padding, covering the cached positions too. A real token's position id counts the real tokens
        before it; a pad attends only to itself (its output is never used, but must not be NaN).
        segments: None or (B, T) long, packed rows: runs of one id are sequences of their own (a token
        attends to the tokens of its run before it, its position id counts from the run's start); with
        neither cache nor attention_mask."""
        B, T = idx.size()
        if isinstance(cache, list):
            cache = KVCache.holding(cache, self.config)
        t0 = 0 if cache is None else cache.n
        assert t0 + T <= self.config.block_size, f"length {t0 + T} > block_size {self.config.block_size}"
        assert T == 1 or t0 == 0, "a cache is filled by the prompt, then one token at a time"
        at = torch.arange(t0, t0 + T, device=idx.device)  # (T,) positions of the new tokens
        pos, attn_mask = at, None
        if attention_mask is not None:
            real = attention_mask.bool()  # (B, Tk) with Tk = t0 + T
            pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, t0:]  # (B, T)
            q_idx = at[:, None]  # (T, 1)
            k_idx = torch.arange(t0 + T, device=idx.device)[None, :]  # (1, Tk)
            attn_mask = (k_idx <= q_idx) & (real[:, None, :] | (k_idx == q_idx))  # (B, T, Tk) causal, real keys
            attn_mask = attn_mask[:, None]  # (B, 1, T, Tk), broadcast over heads
        if segments is not None:
            assert cache is None and attention_mask is None, "packed rows are for training forwards"
            i = at  # (T,) = arange(T)
            start = torch.ones_like(segments, dtype=torch.bool)  # (B, T) True where a run begins
            start[:, 1:] = segments[:, 1:] != segments[:, :-1]
            pos = i - torch.where(start, i, 0).cummax(-1).values  # (B, T) position within its run
            run = start.long().cumsum(-1)  # (B, T) run number: ids may repeat in runs apart, runs do not
            attn_mask = ((run[:, :, None] == run[:, None, :]) & (i[:, None] >= i[None, :]))[:, None]  # (B, 1, T, T)
        h, kv = self.run(idx, pos, attn_mask, cache, slice(t0, t0 + T), t0 + T)
        if cache is None:
            return h, kv
        cache.n = t0 + T
        return h, cache

    def run(self, idx, pos, attn_mask=None, cache=None, at=None, n_keys=None):
        """The blocks over tokens idx (B, T) at position ids pos ((T,) or (B, T)): final hidden states (B, T, C)
        and the keys and values attended to, per layer. With a cache, the new keys and values are written at
        cache positions at ((T,) long) and the queries attend to the first n_keys cached positions, where
        attn_mask allows (see CausalSelfAttention)."""
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        kvs = []
        for i, block in enumerate(self.transformer.h):
            x, kv = block(x, None if cache is None else (cache.k[i], cache.v[i], at, n_keys), attn_mask)
            kvs.append(kv)
        return self.transformer.ln_f(x), kvs

    def forward(self, idx, targets=None, attention_mask=None, hidden=False, segments=None):
        """Language-model forward: logits (B, T, V), and the mean cross-entropy if targets are given
        (-1 in targets is the ignore index). attention_mask (B, T): 1 real, 0 left padding (see body).
        hidden=True: the final hidden states (B, T, C) instead of logits, for a head applied outside
        (completion_logprobs_chunked), still through a DDP or torch.compile wrapper. segments (B, T): packed
        rows (see body), SFT's sft_batch_from_examples(..., pack=)."""
        h, _ = self.body(idx, attention_mask=attention_mask, segments=segments)
        if hidden:
            return h, None
        logits = self.lm_head(h)  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def logprobs(self, seq, n_prompt, temperature=1.0, prompt_mask=None):
        """Training-time forward: log-probs of the completion tokens seq[:, n_prompt:], with gradient.
        See completion_logprobs."""
        return completion_logprobs(self, seq, n_prompt, temperature, prompt_mask)

    @torch.no_grad()
    def generate(
        self,
        idx,
        max_new_tokens,
        temperature=1.0,
        top_k=None,
        eos_id=None,
        uniforms=None,
        use_cache=True,
        attention_mask=None,
        compile=False,
        tool=None,
        trigger_id=None,
    ):
        """Sample completions of the prompts idx (B, P).

        temperature: > 0 samples from softmax(logits / temperature); 0 takes the argmax (greedy).
        top_k: keep only the k most likely tokens before sampling.
        eos_id: once a row samples it, the row is done: later positions hold eos_id with log-prob 0.
        uniforms: (B, max_new_tokens) numbers in [0, 1) that drive the sampling (inverse CDF), so a
          batch split across DDP ranks samples exactly what one process would; default torch.rand.
        use_cache: the KV cache, valid while prompt + completion fits in block_size; beyond it each
          step recomputes the last block_size tokens (nanoGPT's crop), as use_cache=False always does.
        attention_mask: (B, P) 1 for real prompt tokens, 0 for left padding (left_pad); prompts of one
          length need none (an all-ones mask takes the unpadded path, the same numbers bit for bit).
        compile: run the per-token step (decode) through torch.compile (see FIXED_SHAPES; CUDA graphs on
          CUDA). Fused kernels sum in another order: log-probs agree with the eager path's to float rounding,
          not bit for bit. The first call compiles (tens of seconds on a CPU); off by default, as on a CPU
          it pays only over many calls (bench.py --compile).
        tool, trigger_id: multi-turn rollouts. When a row samples trigger_id (the end of a tool call),
          tool(row, ids) is called with the row's index and its completion ids so far (the trigger last) and
          returns the environment's reply as token ids; they are written into that row one per position
          instead of the sampled token (the position's uniform is drawn and not used, so the other positions
          sample what they would anyway) and fed back through the same decode step; the other rows go on
          sampling. A reply counts against max_new_tokens: what does not fit is cut.
        Returns (tokens (B, max_new_tokens) long, logp (B, max_new_tokens) float): log-probs of the
        sampled tokens under the distribution they were drawn from (temperature and top-k applied;
        for greedy, under the untempered softmax). With a tool, also env (B, max_new_tokens) float,
        1 where the environment wrote the token (its logp is 0: it was not sampled).
        """
        was_training = self.training
        self.eval()
        (B, P), T, bs, dev = idx.size(), max_new_tokens, self.config.block_size, idx.device
        if uniforms is None:
            uniforms = torch.rand(B, T, device=dev)
        uniforms = uniforms.to(dev)
        tokens = torch.full((B, T), -1 if eos_id is None else eos_id, dtype=torch.long, device=dev)
        logps = torch.zeros(B, T, device=dev)
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        if tool is not None:
            env = torch.zeros(B, T, device=dev)  # 1 = written by the environment
            queued = [[] for _ in range(B)]  # per row, the reply tokens still to write
        seq = torch.cat([idx, tokens], dim=1)  # (B, P + T): the prompt, then each sampled token written in place
        # everything below is built once, not per token; every sampled token is real (after the end token
        # too: it is masked in the loss)
        mask = None  # (B, P + T) 1 real, 0 left padding
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = torch.cat([attention_mask.to(dev).long(), torch.ones_like(tokens)], dim=1)
        cache = None
        if use_cache and P <= bs:
            size = min(P + T - 1, bs)  # the prompt and every sampled token fed back (the last one never is)
            fixed = compile and dev.type in FIXED_SHAPES
            cache = self.kv_cache(B, size, dev, keep=fixed)
            at = torch.arange(size, device=dev)  # (size,) cache positions
            pos = at if mask is None else (mask.cumsum(-1) - 1).clamp(min=0)  # (size,) or (B, P + T) position ids
            real = None if mask is None else mask.bool()[:, None, None, :]  # (B, 1, 1, P + T) keys that are real
            decode = compiled_decode(dev.type) if compile else GPT.decode
        check_every = END_CHECK_EVERY.get(dev.type, 8)
        for t in range(T):
            n = P + t  # tokens so far
            if cache is not None and n <= bs:
                if t == 0:  # prefill: the prompt into the cache
                    h, _ = self.body(idx, cache, None if mask is None else mask[:, :P])
                    nxt, lp = sample(self.lm_head(h[:, -1]).float(), uniforms[:, :1], temperature, top_k)
                else:  # the token sampled last, at position n - 1, against the cache
                    where = at[n - 1 : n] if compile else slice(n - 1, n)  # a tensor: no recompile per position
                    if fixed:  # fixed shapes: attend over all `size` cache positions, the unwritten ones masked
                        n_keys, keys = size, at.view(1, 1, 1, size) <= n - 1  # (1, 1, 1, size) written
                        keys = keys if real is None else real[..., :size] & keys  # (B, 1, 1, size)
                        if dev.type == "cuda":
                            torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs were consumed
                    else:
                        n_keys, keys = n, None if real is None else real[..., :n]  # (B, 1, 1, n)
                    p = pos[n - 1 : n] if mask is None else pos[:, n - 1 : n]  # (1,) or (B, 1)
                    args = (seq[:, n - 1 : n], p, where, keys, n_keys, cache, uniforms[:, t : t + 1])
                    nxt, lp = decode(self, *args, temperature, top_k)
                    cache.n = n
            else:  # crop the context to block_size and recompute
                s = max(0, n - bs)
                h, _ = self.body(seq[:, s:n], attention_mask=None if mask is None else mask[:, s:n])
                nxt, lp = sample(self.lm_head(h[:, -1]).float(), uniforms[:, t : t + 1], temperature, top_k)
            if eos_id is not None:
                nxt, lp = nxt.masked_fill(done, eos_id), lp.masked_fill(done, 0.0)
            if tool is not None:
                nxt, lp = self._tool_turn(nxt, lp, t, tokens, env, queued, done, tool, trigger_id)
            tokens[:, t], logps[:, t], seq[:, n] = nxt, lp, nxt
            if eos_id is not None:
                done = done | (nxt == eos_id)
                if (t + 1) % check_every == 0 and bool(done.all()):  # the rest already holds eos_id and 0
                    break
        self.train(was_training)
        return (tokens, logps) if tool is None else (tokens, logps, env)

    @staticmethod
    def _tool_turn(nxt, lp, t, tokens, env, queued, done, tool, trigger_id):
        """generate's tool step at position t: rows with reply tokens queued take the next one instead of the
        sampled nxt (log-prob 0, marked in env); rows that sampled trigger_id now call the tool and queue its
        reply for the positions after t. Returns (nxt, lp) (B,) to write at t."""
        forced = [i for i, q in enumerate(queued) if q]
        if forced:
            rows = torch.tensor(forced, device=nxt.device)
            nxt, lp = nxt.clone(), lp.clone()
            nxt[rows] = torch.tensor([queued[i].pop(0) for i in forced], dtype=nxt.dtype, device=nxt.device)
            lp[rows], env[rows, t] = 0.0, 1.0
        calls = (nxt == trigger_id) & ~done  # done rows hold the end token: never a call
        if forced:
            calls[rows] = False  # a trigger written by the environment is not the policy's call
        for i in calls.nonzero().flatten().tolist():
            ids = tokens[i, :t].tolist() + [trigger_id]
            queued[i] = list(tool(i, ids))[: tokens.size(1) - t - 1]  # cut at max_new_tokens
        return nxt, lp

    def decode(self, tok, pos, at, keys, n_keys, cache, u, temperature=1.0, top_k=None):
        """generate's per-token step: tokens tok (B, 1) at position ids pos, their keys and values written at
        cache position at ((1,) long), attending to the first n_keys cache positions where keys (broadcast to
        (B, 1, 1, n_keys)) is True (None: all); then sample with the uniforms u (B, 1).
        Returns (next token (B,), its log-prob (B,))."""
        h, _ = self.run(tok, pos, keys, cache, at, n_keys)  # (B, 1, C)
        return sample(self.lm_head(h[:, -1]).float(), u, temperature, top_k)

    def kv_cache(self, B, size, device, keep=False):
        """A zeroed KVCache for B rows and size positions, in the dtype the keys will have (autocast's).
        keep: reuse the last kept one of the same shape, as the compiled decode needs: CUDA graphs replay
        on fixed addresses (a new cache would be recorded anew)."""
        ac = torch.is_autocast_enabled(device.type)
        dtype = torch.get_autocast_dtype(device.type) if ac else self.lm_head.weight.dtype
        old = getattr(self, "_kept_cache", None)
        if keep and old is not None and old.k[0].shape[0] == B and old.size == size and old.k[0].dtype == dtype:
            old.n = 0  # zeroed again: a NaN left there would poison the masked positions (0 * NaN)
            for buf in old.k + old.v:
                buf.zero_()
            return old
        cache = KVCache(self.config, B, size, device, dtype)
        if keep:
            for buf in cache.k + cache.v:
                torch._dynamo.mark_static_address(buf)  # written in place by the CUDA graph
            self._kept_cache = cache
        return cache

    def flops_per_token(self, T):
        """Training FLOPs per token (PaLM appendix B, as nanoGPT): 6N for the matmuls + 12*L*H*Q*T attention."""
        cfg = self.config
        N = self.num_params() - self.transformer.wpe.weight.numel()
        L, H, Q = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head
        return 6 * N + 12 * L * H * Q * T


# tokens between generate's checks that every row has ended, by device type (default 8): on a GPU the check
# makes the host wait for the GPU, so not every token; the rest of the rows already hold the end token
END_CHECK_EVERY = {"cpu": 1}

# device types where generate(compile=True) runs the decode step with every shape fixed: it attends over the
# whole cache, the positions not yet written masked out, as CUDA graphs need. Elsewhere (a CPU) the compiled step
# attends over the filled part like the eager one (one graph for every length: dynamic shapes), which costs
# fewer FLOPs than the whole cache and needs no graph to replay.
FIXED_SHAPES = {"cuda"}


@functools.cache
def compiled_decode(device_type):
    """GPT.decode through torch.compile, made once per device type. CUDA: mode="reduce-overhead", the step's
    kernels replayed as one CUDA graph, on fixed shapes; elsewhere dynamic shapes (one graph for every length)."""
    mode = "reduce-overhead" if device_type == "cuda" else None
    # not fullgraph=True: past dynamo's recompile limit (8 graphs of one function) it would fail where this
    # falls back to eager
    return torch.compile(GPT.decode, mode=mode, dynamic=device_type not in FIXED_SHAPES)


def left_pad(rows, pad_id):
    """Token lists of different lengths -> (idx (B, P) long, mask (B, P) long), padded on the left so that
    every row's last prompt token sits at position P - 1, where generation continues; mask 1 = real."""
    P = max(len(r) for r in rows)
    idx = torch.full((len(rows), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), P), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            idx[i, P - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, P - len(r) :] = 1
    return idx, mask


def full_mask(seq, n_prompt, prompt_mask):
    """The (N, P + T) attention mask of prompt + completion from the prompt's (N, P) mask (None: no padding)."""
    if prompt_mask is None or bool(prompt_mask.all()):
        return None
    ones = torch.ones(seq.size(0), seq.size(1) - n_prompt, dtype=prompt_mask.dtype, device=prompt_mask.device)
    return torch.cat([prompt_mask, ones], dim=1)


def completion_logprobs(model, seq, n_prompt, temperature=1.0, prompt_mask=None):
    """log-probs of the completion tokens seq[:, n_prompt:] under model (a GPT, or one wrapped in DDP or
    torch.compile: the call goes through the wrapper so its hooks run), with gradient.

    seq: (N, P + T) prompt then completion; prompt_mask: (N, P) 1 real, 0 left padding, or None.
    Returns (logp (N, T), logits (N, T, V)), the logits already divided by the temperature the
    completions were sampled at, so logp matches generate()'s.
    """
    mask = full_mask(seq, n_prompt, prompt_mask)
    kwargs = {} if mask is None else {"attention_mask": mask[:, :-1]}
    logits, _ = model(seq[:, :-1], **kwargs)  # (N, P+T-1, V), position t predicts token t+1
    start = n_prompt - 1  # the completion's positions begin here
    if temperature != 1.0:  # x / 1.0 == x: at 1 no copy, and per_token_logps slices off the prompt
        logits, start = logits[:, start:].float() / temperature, 0  # (N, T, V)
    logits = logits.float()
    return per_token_logps(logits, seq[:, n_prompt:], start), logits[:, start:]


def head_logprobs(h, weight, tokens, temperature=1.0, entropy_grad=False):
    """The output layer on some positions: log-probs of tokens and the true entropy of the distribution.
    h: (n, C), weight: (V, C) the lm_head's, tokens: (n,) long. Returns (logp (n,), entropy (n,)).
    entropy_grad=False: the entropy without gradient (checkpointed, it would keep its (n, V) buffers to the end)."""
    logits = F.linear(h, weight).float() / temperature  # (n, V), as completion_logprobs scales them
    logp = per_token_logps(logits, tokens)  # (n,)
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        return logp, token_entropy(logits)


def completion_logprobs_chunked(
    model, seq, n_prompt, temperature=1.0, prompt_mask=None, chunk_size=1024, entropy_grad=False
):
    """completion_logprobs without ever holding the (N, T, V) logits: the output layer runs over chunks of
    chunk_size completion positions, and under grad each chunk is checkpointed (torch.utils.checkpoint), so
    its backward recomputes that chunk's logits instead of keeping them. The body runs once, through the
    wrapper (GPT.forward(hidden=True)); prompt positions never reach the head. Same numbers as
    completion_logprobs to float rounding, gradients included (tests/test_memory.py).

    Returns (logp (N, T), entropy (N, T)): the true entropy of each position's distribution (at the
    temperature), in place of the logits a caller would take it from; logp with gradient, the entropy with
    gradient only when entropy_grad (an entropy bonus): a checkpointed chunk recomputes everything it computed,
    and whatever the backward never reads (the entropy's (n, V) buffers) would stay alive until it ends.
    """
    mask = full_mask(seq, n_prompt, prompt_mask)
    kwargs = {} if mask is None else {"attention_mask": mask[:, :-1]}
    h, _ = model(seq[:, :-1], hidden=True, **kwargs)  # (N, P+T-1, C), position t predicts token t+1
    N, T = seq.size(0), seq.size(1) - n_prompt
    h = h[:, n_prompt - 1 :].reshape(N * T, -1)  # (N*T, C) the completion positions
    tokens = seq[:, n_prompt:].reshape(N * T)  # (N*T,)
    weight = unwrap(model).lm_head.weight  # (V, C), tied to the embedding: its gradient sums both uses
    logps, entropies = [], []
    for i in range(0, N * T, chunk_size):
        part = (h[i : i + chunk_size], weight, tokens[i : i + chunk_size], temperature, entropy_grad)
        if torch.is_grad_enabled():  # keep only the chunk's inputs; backward recomputes its logits
            lp, H = checkpoint(head_logprobs, *part, use_reentrant=False)
        else:
            lp, H = head_logprobs(*part)
        logps.append(lp)
        entropies.append(H)
    return torch.cat(logps).view(N, T), torch.cat(entropies).view(N, T)


def unwrap(model):
    """The GPT inside DDP (.module) and torch.compile (._orig_mod) wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


class ValueModel(nn.Module):
    """PPO's critic V(s_t) for every completion position: a GPT body and a scalar head on its final hidden
    state (train_ppo.py, bench.py). Initialise the body from a trained GPT to start from its features."""

    def __init__(self, gpt):
        super().__init__()
        self.gpt = gpt  # its lm_head is tied to the embedding and unused here
        self.v_head = nn.Linear(gpt.config.n_embd, 1)
        nn.init.zeros_(self.v_head.weight)  # V = 0 everywhere at the start
        nn.init.zeros_(self.v_head.bias)

    def forward(self, seq, n_prompt, prompt_mask=None):
        """seq: (N, P + T) -> (N, T): the value of the state before each completion token."""
        mask = full_mask(seq, n_prompt, prompt_mask)
        h, _ = self.gpt.body(seq[:, :-1], attention_mask=None if mask is None else mask[:, :-1])  # (N, P+T-1, C)
        # the head in its own dtype (fp32) even under autocast (which would cast back to bf16): values are
        # regression targets, and bf16's 8-bit mantissa rounds a return of 3.7 to a multiple of 1/64
        with torch.autocast(device_type=h.device.type, enabled=False):
            return self.v_head(h[:, n_prompt - 1 :].to(self.v_head.weight.dtype)).squeeze(-1)  # (N, T)


if __name__ == "__main__":
    tok = CharTokenizer("abcdefgh ")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32))
    out, lp = model.generate(torch.tensor([tok.encode("abc")]), 10, eos_id=tok.eos_id)
    print(f"{model.num_params()} params; sample: {tok.decode(out[0].tolist())!r}; log-probs {lp[0].tolist()}")

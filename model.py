"""
A small nanoGPT-style decoder-only GPT over characters, with KV-cache sampling for RL rollouts.

After karpathy/nanoGPT model.py: pre-LayerNorm blocks, causal self-attention with
F.scaled_dot_product_attention, GELU MLP, learned absolute positions, tied input/output embeddings.
What is added for RL:
  - CharTokenizer: a character vocabulary plus one end token (rendered "|", a character neither task
    uses), so a completion can stop.
  - GPT.generate: samples with a KV cache, returns the tokens *and* their log-probs under the sampling
    distribution (after temperature and top-k), stops each row at the end token.
  - GPT.logprobs: the training-time forward, per-token log-probs of given completion tokens, with grad.
  - Prompts of different lengths: left_pad() them and pass the attention mask to forward, generate and
    completion_logprobs; position ids count real tokens only (mask.cumsum - 1, as Hugging Face's
    generate), pad keys are masked out, so a padded row gets the tokens and log-probs it would get alone.
  - GPTConfig's bias / ln_bias / gelu options, so nanoGPT checkpoints (bias=True or False) and GPT-2's
    weights (bias, tanh GELU) load exactly (utils/init_from.py).

Run `python model.py` to sample from an untrained model (a smoke test).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from grpo import per_token_logps

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
        """attn_mask: None (causal, every key real) or (B, 1, T, T_keys) bool, True where a query may attend."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if kv is not None:  # decoding: T new queries attend to the cached keys plus themselves
            assert T == 1, "the cache path decodes one token at a time"
            k, v = torch.cat([kv[0], k], dim=2), torch.cat([kv[1], v], dim=2)  # (B, nh, T_past+1, hs)
        drop = self.dropout if self.training else 0.0
        # one new query may see every cached key, so causal masking is only needed without a cache
        causal = kv is None and attn_mask is None
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

    def body(self, idx, cache=None, attention_mask=None):
        """Final hidden states (B, T, C) and the new KV cache. With a cache, idx is (B, 1).

        attention_mask: None (every token real) or (B, T_past + T), 1 for a real token and 0 for left
        padding, covering the cached positions too. A real token's position id counts the real tokens
        before it; a pad attends only to itself (its output is never used, but must not be NaN)."""
        B, T = idx.size()
        t0 = 0 if cache is None else cache[0][0].size(2)
        assert t0 + T <= self.config.block_size, f"length {t0 + T} > block_size {self.config.block_size}"
        attn_mask = None
        if attention_mask is None:
            pos = torch.arange(t0, t0 + T, dtype=torch.long, device=idx.device)  # (T,)
        else:
            real = attention_mask.bool()  # (B, Tk) with Tk = t0 + T
            pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, t0:]  # (B, T)
            q_idx = torch.arange(t0, t0 + T, device=idx.device)[:, None]  # (T, 1)
            k_idx = torch.arange(t0 + T, device=idx.device)[None, :]  # (1, Tk)
            attn_mask = (k_idx <= q_idx) & (real[:, None, :] | (k_idx == q_idx))  # (B, T, Tk) causal, real keys
            attn_mask = attn_mask[:, None]  # (B, 1, T, Tk), broadcast over heads
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        new_cache = []
        for i, block in enumerate(self.transformer.h):
            x, kv = block(x, None if cache is None else cache[i], attn_mask)
            new_cache.append(kv)
        return self.transformer.ln_f(x), new_cache

    def forward(self, idx, targets=None, attention_mask=None):
        """Language-model forward: logits (B, T, V), and the mean cross-entropy if targets are given
        (-1 in targets is the ignore index). attention_mask (B, T): 1 real, 0 left padding (see body)."""
        h, _ = self.body(idx, attention_mask=attention_mask)
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
        Returns (tokens (B, max_new_tokens) long, logp (B, max_new_tokens) float): log-probs of the
        sampled tokens under the distribution they were drawn from (temperature and top-k applied;
        for greedy, under the untempered softmax).
        """
        was_training = self.training
        self.eval()
        B = idx.size(0)
        if uniforms is None:
            uniforms = torch.rand(B, max_new_tokens, device=idx.device)
        uniforms = uniforms.to(idx.device)
        bs = self.config.block_size
        tokens = torch.full((B, max_new_tokens), -1 if eos_id is None else eos_id, dtype=torch.long, device=idx.device)
        logps = torch.zeros(B, max_new_tokens, device=idx.device)
        done = torch.zeros(B, dtype=torch.bool, device=idx.device)
        seq, cache = idx, None
        amask = None if attention_mask is None or bool(attention_mask.all()) else attention_mask.to(idx.device)
        for t in range(max_new_tokens):
            if use_cache and seq.size(1) <= bs:
                if cache is None:
                    h, cache = self.body(seq, attention_mask=amask)  # prefill the prompt
                else:
                    h, cache = self.body(seq[:, -1:], cache, amask)  # one new token against the cache
            else:  # crop the context to block_size and recompute
                h, _ = self.body(seq[:, -bs:], attention_mask=None if amask is None else amask[:, -bs:])
            logits = self.lm_head(h[:, -1, :]).float()  # (B, V)
            if temperature == 0:
                nxt = logits.argmax(-1)  # (B,)
                lp = F.log_softmax(logits, -1).gather(-1, nxt[:, None]).squeeze(-1)
            else:
                logits = logits / temperature
                if top_k is not None and top_k < logits.size(-1):
                    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                logp_all = F.log_softmax(logits, dim=-1)  # (B, V)
                cdf = logp_all.exp().cumsum(-1)  # (B, V)
                u = uniforms[:, t : t + 1] * cdf[:, -1:]  # scale by the float total so u < cdf[-1]
                nxt = (cdf <= u).sum(-1).clamp(max=logits.size(-1) - 1)  # inverse CDF: first cdf > u
                lp = logp_all.gather(-1, nxt[:, None]).squeeze(-1)
            if eos_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
                lp = torch.where(done, torch.zeros_like(lp), lp)
            tokens[:, t], logps[:, t] = nxt, lp
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            if amask is not None:  # every sampled token is real (after the end token too: it is masked in the loss)
                amask = torch.cat([amask, torch.ones_like(amask[:, :1])], dim=1)
            if eos_id is not None:
                done = done | (nxt == eos_id)
                if bool(done.all()):  # .item()-style sync; cheap at these sizes
                    break
            if cache is not None and seq.size(1) > bs:
                cache = None  # the window slides: absolute positions change, the cache is stale
        self.train(was_training)
        return tokens, logps

    def flops_per_token(self, T):
        """Training FLOPs per token (PaLM appendix B, as nanoGPT): 6N for the matmuls + 12*L*H*Q*T attention."""
        cfg = self.config
        N = self.num_params() - self.transformer.wpe.weight.numel()
        L, H, Q = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head
        return 6 * N + 12 * L * H * Q * T


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
    logits, _ = model(seq[:, :-1], **kwargs)  # position t predicts token t+1
    logits = logits[:, n_prompt - 1 :].float() / temperature  # (N, T, V)
    return per_token_logps(logits, seq[:, n_prompt:]), logits


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
        # the head in fp32 even under autocast (which would cast .float() back to bf16): values are
        # regression targets, and bf16's 8-bit mantissa rounds a return of 3.7 to a multiple of 1/64
        with torch.autocast(device_type=h.device.type, enabled=False):
            return self.v_head(h[:, n_prompt - 1 :].float()).squeeze(-1)  # (N, T)


if __name__ == "__main__":
    tok = CharTokenizer("abcdefgh ")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32))
    out, lp = model.generate(torch.tensor([tok.encode("abc")]), 10, eos_id=tok.eos_id)
    print(f"{model.num_params()} params; sample: {tok.decode(out[0].tolist())!r}; log-probs {lp[0].tolist()}")

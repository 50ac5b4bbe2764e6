"""The fast rollout path of model.py: the preallocated KV cache, the per-token decode step, the compiled step.

Second implementations: full recompute of the whole prefix at every token (use_cache=False, no cache at all),
and generate as it was before the preallocated cache (torch.cat growing the cache), kept here as a reference
written out from the previous model.py. On a CPU in fp32 the eager cached path does the same arithmetic as that
reference, so it must agree bit for bit; the compiled step fuses and reorders float operations, so it must give
the same tokens and log-probs within float rounding.
"""

import pytest
import torch
import torch.nn.functional as F

import model as model_py
from model import GPT, GPTConfig, KVCache, left_pad, sample

ROWS = [[1, 2, 3, 4, 5, 6], [7, 3], [2, 2, 9, 1], [5]]  # prompts of 6, 2, 4 and 1 tokens


# The tests compare one computation done two ways (cached vs recomputed, fast vs reference path): different
# shapes take different kernels and summation orders, which in float32 with these large weights differ by up
# to 1e-4 depending on the machine and thread count. The models run in float64 (rounding ~1e-14), so the
# tolerance can sit far below what a real bug (a stale cache slot, a position off by one) moves.
ATOL = 1e-9


def tiny(block_size=24, seed=0, n_layer=2):
    """A float64 GPT with large weights (distributions far from uniform)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=block_size, vocab_size=11, n_layer=n_layer, n_head=2, n_embd=32))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model.double()


@torch.no_grad()
def cat_cache_generate(model, idx, T, temperature, eos_id, u, mask=None):
    """generate before the preallocated cache: the cache grows by torch.cat per layer and token, the mask is
    rebuilt per token from the running attention mask. Written out from the blocks' weights; the sampling
    as in the previous model.py."""
    B, P = idx.shape
    C, H = model.config.n_embd, model.config.n_head
    blocks, tr = model.transformer.h, model.transformer
    seq, amask, kv = idx, mask, [None] * len(blocks)
    tokens = torch.full((B, T), eos_id, dtype=torch.long)
    logps, done = torch.zeros(B, T), torch.zeros(B, dtype=torch.bool)
    for t in range(T):
        x_idx = seq if t == 0 else seq[:, -1:]
        t0, n = (0, P) if t == 0 else (seq.size(1) - 1, 1)
        if amask is None:
            pos, attn = torch.arange(t0, t0 + n), None
        else:
            pos = (amask.cumsum(-1) - 1).clamp(min=0)[:, t0:]
            q_idx, k_idx = torch.arange(t0, t0 + n)[:, None], torch.arange(t0 + n)[None, :]
            attn = ((k_idx <= q_idx) & (amask.bool()[:, None, :] | (k_idx == q_idx)))[:, None]
        x = tr.wte(x_idx) + tr.wpe(pos)
        for i, blk in enumerate(blocks):
            q, k, v = blk.attn.c_attn(blk.ln_1(x)).split(C, dim=2)
            q, k, v = (z.view(B, n, H, C // H).transpose(1, 2) for z in (q, k, v))
            if kv[i] is not None:
                k, v = torch.cat([kv[i][0], k], dim=2), torch.cat([kv[i][1], v], dim=2)
            kv[i] = (k, v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn, is_causal=attn is None and t == 0)
            x = x + blk.attn.c_proj(y.transpose(1, 2).contiguous().view(B, n, C))
            x = x + blk.mlp(blk.ln_2(x))
        logits = model.lm_head(tr.ln_f(x)[:, -1]).float() / temperature
        logp_all = F.log_softmax(logits, -1)
        cdf = logp_all.exp().cumsum(-1)
        nxt = (cdf <= u[:, t : t + 1] * cdf[:, -1:]).sum(-1).clamp(max=logits.size(-1) - 1)
        lp = logp_all.gather(-1, nxt[:, None]).squeeze(-1)
        nxt, lp = torch.where(done, eos_id, nxt), torch.where(done, 0.0, lp)
        tokens[:, t], logps[:, t] = nxt, lp
        seq = torch.cat([seq, nxt[:, None]], dim=1)
        if amask is not None:
            amask = torch.cat([amask, torch.ones_like(amask[:, :1])], dim=1)
        done = done | (nxt == eos_id)
    return tokens, logps


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_preallocated_cache_is_the_cat_cache_bit_for_bit(padded, temperature):
    """Same arithmetic as growing the cache by torch.cat: the same tokens and log-probs, bit for bit."""
    model = tiny()
    idx, mask = left_pad(ROWS, pad_id=10)
    u = torch.rand(len(ROWS), 12)
    m = mask if padded else None
    out, lp = model.generate(idx, 12, temperature, eos_id=10, uniforms=u, attention_mask=m)
    ref, ref_lp = cat_cache_generate(model, idx, 12, temperature, 10, u, m)
    assert torch.equal(out, ref) and torch.equal(lp, ref_lp)


def test_cache_is_allocated_once_and_written_in_place(monkeypatch):
    """One KVCache per generate call, its buffers never replaced: every position is written into them."""
    model = tiny()
    made = []
    monkeypatch.setattr(model_py, "KVCache", lambda *a, **k: made.append(KVCache(*a, **k)) or made[-1])
    idx = torch.randint(0, 10, (3, 5))
    out, _ = model.generate(idx, 7)
    (cache,) = made
    assert cache.size == 5 + 7 - 1 and cache.n == 5 + 7 - 1  # the last sampled token is never fed back
    # the buffers hold exactly the keys and values a full forward over prompt + completion computes
    seq = torch.cat([idx, out], dim=1)[:, :-1]
    _, kv = model.body(seq)
    for i, (k, v) in enumerate(kv):
        assert torch.allclose(cache.k[i], k, atol=ATOL) and torch.allclose(cache.v[i], v, atol=ATOL)


def test_body_continues_from_the_cache_it_returned():
    """body without a cache returns the (k, v) per layer; passed back, the next token attends to them, as a
    full forward over the longer sequence computes."""
    model = tiny()
    seq = torch.randint(0, 10, (2, 6))
    h, kv = model.body(seq[:, :5])
    h1, cache = model.body(seq[:, 5:], kv)
    h2, cache = model.body(torch.tensor([[3], [4]]), cache)
    full, _ = model.body(torch.cat([seq, torch.tensor([[3], [4]])], dim=1))
    assert torch.allclose(h1[:, 0], full[:, 5], atol=ATOL) and torch.allclose(h2[:, 0], full[:, 6], atol=ATOL)
    assert cache.n == 7 and cache.size == model.config.block_size


@pytest.mark.parametrize("every", [1, 8])
def test_end_of_all_check_every_k_tokens_changes_nothing(monkeypatch, every):
    """Rows that ended keep the end token and log-prob 0, so checking 'all done' every 8 tokens (as on a GPU)
    returns what checking every token returns, and the loop still stops early."""
    monkeypatch.setattr(model_py, "END_CHECK_EVERY", {"cpu": every})
    model = tiny(block_size=40)
    with torch.no_grad():  # the end token likely (a logit of about +1.6): the rows end after 0 to 13 tokens
        model.transformer.ln_f.bias.fill_(0.05)
        model.lm_head.weight[10] += 1.0
    g = torch.Generator().manual_seed(1)
    idx, u = torch.randint(0, 10, (6, 3), generator=g), torch.rand(6, 30, generator=g)
    calls = []
    monkeypatch.setattr(model_py, "sample", lambda *a: calls.append(1) or sample(*a))
    out, lp = model.generate(idx, 30, eos_id=10, uniforms=u)
    ref, ref_lp = cat_cache_generate(model, idx, 30, 1.0, 10, u)
    assert torch.equal(out, ref) and torch.equal(lp, ref_lp)
    last_end = int((out != 10).sum(1).max())  # the step at which the last row sampled the end token
    assert last_end < 16 and len(calls) == (last_end + 1 if every == 1 else (last_end // 8 + 1) * 8)


def test_fixed_shape_decode_equals_recompute(monkeypatch):
    """The fixed-shape step CUDA graphs need (the whole cache attended, unwritten positions masked, the write
    position a tensor), run eagerly on the CPU: the same tokens, log-probs to float rounding."""
    monkeypatch.setattr(model_py, "FIXED_SHAPES", {"cpu"})
    monkeypatch.setattr(model_py, "compiled_decode", lambda device_type: GPT.decode)
    model = tiny()
    idx, mask = left_pad(ROWS, pad_id=10)
    u = torch.rand(len(ROWS), 12)
    for m in (None, mask):
        for _ in range(2):  # the second call reuses the kept cache, zeroed again
            out, lp = model.generate(idx, 12, eos_id=10, uniforms=u, attention_mask=m, compile=True)
            ref, ref_lp = model.generate(idx, 12, eos_id=10, uniforms=u, attention_mask=m, use_cache=False)
            assert torch.equal(out, ref) and torch.allclose(lp, ref_lp, atol=ATOL)
    assert model._kept_cache.k[0].shape == (len(ROWS), 2, len(ROWS[0]) + 11, 16)


def test_compiled_decode_equals_recompute():
    """generate(compile=True): the same tokens as full recompute, log-probs to float rounding, with and
    without left padding, past block_size (the crop) included."""
    try:
        torch.compile(lambda x: x + 1)(torch.zeros(2))
    except Exception as e:  # no C compiler, or no inductor for this platform: nothing to test here
        pytest.skip(f"torch.compile does not run here: {e!r}")
    model = tiny(block_size=12, n_layer=1)
    idx, mask = left_pad(ROWS, pad_id=10)
    u = torch.rand(len(ROWS), 10)
    for m in (None, mask):
        out, lp = model.generate(idx, 10, eos_id=10, uniforms=u, attention_mask=m, compile=True)
        ref, ref_lp = model.generate(idx, 10, eos_id=10, uniforms=u, attention_mask=m, use_cache=False)
        assert torch.equal(out, ref) and torch.allclose(lp, ref_lp, atol=ATOL)


# -----------------------------------------------------------------------------
# sample and the cache's bookkeeping: edges the mutation run found untested (tools/mutation.sh, issue 18)


def test_sample_by_hand_temperature_top_k_and_cdf_boundary():
    """Inverse-CDF sampling by hand: at temperature 2 the distribution is softmax(logits / 2); top-k keeps the
    k most likely tokens, the k-th included; u exactly on a cdf value takes the next token (the first cdf > u)."""
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0]])
    p = torch.softmax(logits / 2, -1)[0]
    cdf = p.cumsum(0)
    for u, want in [(0.0, 0), (float(cdf[0]) * 0.999, 0), (float(cdf[0]) * 1.001, 1), (float(cdf[2]) * 1.001, 3)]:
        nxt, lp = sample(logits, torch.tensor([[u]]), temperature=2.0)
        assert nxt.item() == want and lp.item() == pytest.approx(float(p[want].log()), abs=1e-6)
    # top-2 keeps tokens 0 and 2; a u near 1 takes the second of them, not the third-ranked token
    nxt, lp = sample(logits, torch.tensor([[0.999]]), top_k=2)
    q = torch.softmax(torch.tensor([2.0, 1.0]), -1)
    assert nxt.item() == 2 and lp.item() == pytest.approx(float(q[1].log()), abs=1e-6)
    half = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))  # cdf 0.5, 0.75, 1.0: exact in float32
    assert torch.equal(half.softmax(-1).cumsum(-1), torch.tensor([[0.5, 0.75, 1.0]]))
    assert sample(half, torch.tensor([[0.5]]))[0].item() == 1


def test_kept_cache_is_reused_only_for_the_same_shape_and_zeroed():
    """kv_cache(keep=True) (the compiled CUDA-graph decode's fixed addresses) hands back the kept cache for the
    same rows, size and dtype, zeroed and emptied, and a new one otherwise; without keep, always a new one."""
    model = tiny()
    a = model.kv_cache(3, 10, torch.device("cpu"), keep=True)
    a.k[0].fill_(7.0)
    a.n = 4
    b = model.kv_cache(3, 10, torch.device("cpu"), keep=True)
    assert b is a and b.n == 0 and all(bool((t == 0).all()) for t in b.k + b.v)
    assert model.kv_cache(2, 10, torch.device("cpu"), keep=True) is not b  # other rows
    c = model.kv_cache(2, 10, torch.device("cpu"), keep=True)
    assert model.kv_cache(2, 12, torch.device("cpu"), keep=True) is not c  # another size
    assert model.kv_cache(3, 10, torch.device("cpu")) is not model._kept_cache
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the keys' dtype under autocast
        d = model.kv_cache(2, 12, torch.device("cpu"), keep=True)
    assert d.k[0].dtype == torch.bfloat16 and d is not model.kv_cache(2, 12, torch.device("cpu"), keep=True)
    assert model.kv_cache(2, 12, torch.device("cpu")).k[0].dtype == torch.float64  # the weights' (tiny() is float64)


def test_holding_keeps_rows_heads_and_dtype():
    """KVCache.holding: B rows (not the head count), block_size positions, the keys' dtype, the keys in place."""
    cfg = GPTConfig(block_size=9, vocab_size=11, n_layer=2, n_head=2, n_embd=32)
    kv = [(torch.randn(3, 2, 4, 16).bfloat16(), torch.randn(3, 2, 4, 16).bfloat16()) for _ in range(2)]
    cache = KVCache.holding(kv, cfg)
    assert cache.k[0].shape == (3, 2, 9, 16) and cache.k[1].dtype == torch.bfloat16 and cache.n == 4
    assert torch.equal(cache.k[1][:, :, :4], kv[1][0]) and torch.equal(cache.v[0][:, :, :4], kv[0][1])
    assert bool((cache.k[0][:, :, 4:] == 0).all())

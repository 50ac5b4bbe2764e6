"""model.py: KV-cache sampling equals full recompute, log-probs agree with the training forward."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from grpo import completion_mask
from model import (
    GPT,
    CausalSelfAttention,
    CharTokenizer,
    GPTConfig,
    ValueModel,
    completion_logprobs,
    full_mask,
    left_pad,
)

# The tests below compare one computation laid out two ways (cache vs recompute, padded vs alone, packed vs
# one row each). Different shapes take different matmul kernels and summation orders, so in float32 the
# results differ by rounding: a few 1e-5 relative, and with these large weights up to 1e-4 absolute (seen:
# a value 0.3974 vs 0.3973 on one machine, depending on the thread count). So the models run in float64,
# where that rounding is ~1e-14, and the tolerance is far below what any layout bug moves (a pad attended
# to, a position off by one, a crossed segment: 1e-3 and up).
ATOL = 1e-9
# Log-probs are float32 even then (completion_logprobs casts the logits, as training does): inputs that agree
# to 1e-14 round to float32 numbers at most an ulp apart, and a log-softmax of values |x| < 32 moves that by a
# few ulps of 2e-6 at most.
LOGP_ATOL = 1e-5


def tiny(block_size=24, seed=0, **options):
    """A 2-layer float64 GPT with large weights (distributions far from uniform)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=block_size, vocab_size=11, n_layer=2, n_head=2, n_embd=32, **options))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model.double()


@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (0.7, 4), (0, None)])
def test_kv_cache_equals_full_recompute(temperature, top_k):
    model = tiny()
    idx = torch.randint(0, 10, (6, 5))
    u = torch.rand(6, 12)
    a, lp_a = model.generate(idx, 12, temperature=temperature, top_k=top_k, eos_id=10, uniforms=u, use_cache=True)
    b, lp_b = model.generate(idx, 12, temperature=temperature, top_k=top_k, eos_id=10, uniforms=u, use_cache=False)
    assert torch.equal(a, b)
    assert torch.allclose(lp_a, lp_b, atol=LOGP_ATOL)


def test_cropped_context_beyond_block_size():
    """Past block_size the cache is dropped and the last block_size tokens recomputed (nanoGPT's crop)."""
    model = tiny(block_size=8)
    idx = torch.randint(0, 10, (3, 5))
    u = torch.rand(3, 10)
    a, lp_a = model.generate(idx, 10, uniforms=u, use_cache=True)
    b, lp_b = model.generate(idx, 10, uniforms=u, use_cache=False)
    assert torch.equal(a, b) and torch.allclose(lp_a, lp_b, atol=LOGP_ATOL)


def test_generate_logps_match_training_forward():
    model = tiny()
    idx = torch.randint(0, 10, (8, 4))
    out, lp = model.generate(idx, 10, temperature=0.8, eos_id=10)
    logp, logits = completion_logprobs(model, torch.cat([idx, out], 1), 4, temperature=0.8)
    mask = completion_mask(out, 10)
    assert logits.shape == (8, 10, 11)
    assert torch.allclose(logp * mask, lp * mask, atol=LOGP_ATOL)
    assert logp.requires_grad


def test_rows_stop_at_end_token():
    model = tiny()
    with torch.no_grad():
        model.lm_head.weight[10] += 3.0  # make the end token likely, so rows stop at different points
    out, lp = model.generate(torch.randint(0, 10, (16, 3)), 10, eos_id=10)
    mask = completion_mask(out, 10)
    assert (mask.sum(1) < 10).any()
    assert torch.all(out[mask == 0] == 10) and torch.all(lp[mask == 0] == 0)
    assert torch.all(lp[mask == 1] < 0)


def test_generate_mode_and_no_grad():
    model = tiny()
    model.train()
    out, lp = model.generate(torch.zeros(2, 3, dtype=torch.long), 4)
    assert model.training and not lp.requires_grad


def test_inverse_cdf_sampling_matches_softmax():
    """The uniforms-driven sampler draws from softmax(logits / T): empirical frequencies match."""
    model = tiny()
    idx = torch.zeros(20000, 3, dtype=torch.long)
    out, _ = model.generate(idx, 1, temperature=1.3)
    logits, _ = model(idx[:1])
    probs = torch.softmax(logits[0, -1] / 1.3, -1)
    freq = torch.bincount(out[:, 0], minlength=11).to(probs.dtype) / 20000
    assert torch.allclose(freq, probs, atol=0.015)


def test_top_k_never_samples_outside_top_k():
    model = tiny()
    idx = torch.zeros(500, 3, dtype=torch.long)
    out, _ = model.generate(idx, 1, top_k=2)
    logits, _ = model(idx[:1])
    top2 = set(torch.topk(logits[0, -1], 2).indices.tolist())
    assert set(out[:, 0].tolist()) <= top2


def test_tokenizer_roundtrip():
    tok = CharTokenizer("0123456789+=")
    ids = tok.encode("12+3=") + [tok.eos_id, 1]
    assert tok.decode(ids) == "12+3=|0" and tok.decode_completion(ids) == "12+3=|"
    assert tok.chars == "+0123456789=" and tok.eos_id == 12 and tok.vocab_size == 13  # ids 0..11, then the end
    with pytest.raises(AssertionError):
        CharTokenizer("a|b")


# -----------------------------------------------------------------------------
# the forward against a plain re-implementation, sizes, init, dropout, value model


def loop_forward(model, idx):
    """The GPT forward written out from its weights: one head and one position at a time, float64.
    Follows the config's bias / ln_bias / gelu options (a missing bias is a zero)."""
    w = {k: v.double() for k, v in model.state_dict().items()}
    cfg = model.config
    C, H = cfg.n_embd, cfg.n_head
    hs = C // H
    zero = lambda n: torch.zeros(n, dtype=torch.float64)
    ln = lambda x, name: F.layer_norm(x, (C,), w[name + ".weight"], w.get(name + ".bias", zero(C)))
    lin = lambda x, name: x @ w[name + ".weight"].T + w.get(name + ".bias", zero(w[name + ".weight"].size(0)))
    B, T = idx.shape
    x = w["transformer.wte.weight"][idx] + w["transformer.wpe.weight"][:T]  # (B, T, C)
    for layer in range(cfg.n_layer):
        p = f"transformer.h.{layer}."
        q, k, v = lin(ln(x, p + "ln_1"), p + "attn.c_attn").split(C, dim=2)
        y = torch.zeros_like(x)
        for b in range(B):
            for h in range(H):
                heads = slice(h * hs, (h + 1) * hs)
                for t in range(T):  # position t attends to positions 0..t
                    scores = [q[b, t, heads] @ k[b, s, heads] / math.sqrt(hs) for s in range(t + 1)]
                    att = torch.softmax(torch.stack(scores), 0)
                    y[b, t, heads] = sum(att[s] * v[b, s, heads] for s in range(t + 1))
        x = x + lin(y, p + "attn.c_proj")
        hidden = lin(ln(x, p + "ln_2"), p + "mlp.c_fc")
        if cfg.gelu == "tanh":  # GPT-2's gelu_new, written out
            act = 0.5 * hidden * (1 + torch.tanh(math.sqrt(2 / math.pi) * (hidden + 0.044715 * hidden**3)))
        else:
            act = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
        x = x + lin(act, p + "mlp.c_proj")
    return ln(x, "transformer.ln_f") @ w["transformer.wte.weight"].T  # tied: the output matrix is wte


@pytest.mark.parametrize(
    "options",
    [{}, {"bias": True, "gelu": "tanh"}, {"bias": False, "ln_bias": False}],
    ids=["ours", "gpt2-style", "nanogpt-bias-false"],
)
def test_forward_matches_loop(options):
    model = tiny(**options)
    idx = torch.randint(0, 11, (2, 6))
    logits, loss = model(idx)
    assert loss is None and logits.shape == (2, 6, 11)
    assert torch.allclose(logits.double(), loop_forward(model, idx), atol=ATOL)
    assert model.lm_head.weight is model.transformer.wte.weight


def test_forward_loss_is_cross_entropy_ignoring_minus_one():
    model = tiny()
    idx = torch.randint(0, 11, (2, 6))
    targets = torch.randint(0, 11, (2, 6))
    targets[0, :3] = -1  # e.g. the prompt in SFT: not predicted
    targets[1, 0] = 1
    logits, loss = model(idx, targets)
    nll = [
        -torch.log_softmax(logits[b, t], -1)[targets[b, t]] for b in range(2) for t in range(6) if targets[b, t] >= 0
    ]
    assert loss.item() == pytest.approx(torch.stack(nll).mean().item(), rel=1e-5)


def test_logprobs_default_temperature_and_wrapper():
    """GPT.logprobs is completion_logprobs; the default temperature is 1: plain log-softmax of the logits."""
    model = tiny()
    seq = torch.randint(0, 11, (3, 9))
    logits, _ = model(seq[:, :-1])
    expected = torch.stack(
        [torch.log_softmax(logits[:, 3 + t], -1).gather(-1, seq[:, 4 + t, None])[:, 0] for t in range(5)], 1
    )
    for lp, _ in (model.logprobs(seq, 4), completion_logprobs(model, seq, 4)):
        assert torch.allclose(lp, expected.float(), atol=LOGP_ATOL)
    lp, lg = model.logprobs(seq, 4, temperature=0.5)
    lp2, lg2 = completion_logprobs(model, seq, 4, temperature=0.5)
    assert torch.equal(lp, lp2) and torch.equal(lg, lg2) and torch.allclose(lg, (logits[:, 3:] / 0.5).float())


def test_num_params_and_flops_hand_computed():
    """No biases in the linear layers (nanoGPT), the embedding counted once (tied), LayerNorms with both."""
    model = GPT(GPTConfig(block_size=24, vocab_size=11, n_layer=2, n_head=2, n_embd=32))
    C = 32
    per_block = 2 * C + 3 * C * C + C * C + 2 * C + 4 * C * C + 4 * C * C  # ln_1, c_attn, c_proj, ln_2, mlp
    assert model.num_params() == 11 * C + 24 * C + 2 * per_block + 2 * C == 26016
    # PaLM appendix B: 6 * (params without the position embedding) + 12 * L * H * Q * T
    assert model.flops_per_token(10) == 6 * (26016 - 24 * C) + 12 * 2 * 2 * 16 * 10 == 159168


def test_init_gpt2():
    """Linear and embedding weights ~ N(0, 0.02); residual projections (c_proj) ~ N(0, 0.02 / sqrt(2 L))."""
    torch.manual_seed(0)
    model = GPT(GPTConfig())  # n_layer 3, n_embd 128: 8k to 65k numbers per matrix
    for name, p in model.named_parameters():
        if p.dim() == 1:  # LayerNorm: PyTorch's ones and zeros
            assert torch.equal(p, torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p)), name
            continue
        std = 0.02 / math.sqrt(2 * 3) if name.endswith("c_proj.weight") else 0.02
        assert abs(p.mean().item()) < 0.05 * std, name
        assert p.std().item() == pytest.approx(std, rel=0.05), name


def test_attention_dropout_only_in_training():
    """Attention-probability dropout in train mode; none in eval mode (generate runs in eval mode)."""
    torch.manual_seed(0)
    attn = CausalSelfAttention(GPTConfig(n_embd=32, n_head=2, dropout=0.5))
    attn.resid_dropout = nn.Identity()  # isolate the dropout inside scaled_dot_product_attention
    x = torch.randn(2, 6, 32)
    attn.eval()
    assert torch.equal(attn(x)[0], attn(x)[0])
    attn.train()
    assert not torch.equal(attn(x)[0], attn(x)[0])


def test_longer_than_block_size_is_refused():
    model = tiny(block_size=8)
    with pytest.raises(AssertionError, match="length 9 > block_size 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_value_model_starts_at_zero_and_sees_the_state_before_each_token():
    """V(s_t) for t = 0..T-1: position t sees the prompt and o_<t, never o_t itself or anything later."""
    model = ValueModel(tiny())
    seq = torch.randint(0, 10, (3, 4 + 5))
    assert torch.equal(model(seq, 4), torch.zeros(3, 5))  # zero-initialised head
    with torch.no_grad():
        model.v_head.weight.normal_()
        model.v_head.bias.fill_(0.3)
    v = model(seq, 4)
    assert v.shape == (3, 5)
    changed = seq.clone()
    changed[:, 4 + 2] = 10  # o_2
    v2 = model(changed, 4)
    assert torch.equal(v2[:, :3], v[:, :3]) and (v2[:, 3:] != v[:, 3:]).all()
    changed = seq.clone()
    changed[:, -1] = 10  # the last completion token: no state after it is valued
    assert torch.equal(model(changed, 4), v)
    changed = seq.clone()
    changed[:, 3] = 10  # the last prompt token: seen by every state
    assert (model(changed, 4) != v).all()


def test_value_head_runs_in_fp32_under_autocast():
    torch.manual_seed(0)
    vm = ValueModel(GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16)))
    torch.nn.init.normal_(vm.v_head.weight)
    seq = torch.randint(0, 11, (3, 10))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = vm(seq, 4)
    assert v.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, _ = vm.gpt.body(seq[:, :-1])  # the body in bf16, as the model runs it
    expected = (h[:, 3:].float() @ vm.v_head.weight.float().T).squeeze(-1) + vm.v_head.bias
    torch.testing.assert_close(v, expected, atol=1e-5, rtol=1e-5)  # bf16 would be off by ~1e-2


# -----------------------------------------------------------------------------
# config options and prompts of different lengths (left padding)


def test_bias_options_make_the_parameters_nanogpt_names():
    names = lambda m: {n for n, _ in m.named_parameters()}
    ours, with_bias, no_ln_bias = tiny(), tiny(bias=True), tiny(ln_bias=False)
    assert "transformer.h.0.attn.c_attn.bias" not in names(ours) and "transformer.h.0.ln_1.bias" in names(ours)
    linear = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}
    assert {n for n in names(with_bias) - names(ours)} == {
        f"transformer.h.{i}.{m}.bias" for i in range(2) for m in linear
    }
    assert not any(n.endswith("ln_1.bias") or n.endswith("ln_f.bias") for n in names(no_ln_bias))
    assert all(
        float(p.detach().abs().sum()) == 0
        for n, p in GPT(tiny(bias=True).config).named_parameters()
        if "c_fc.bias" in n
    )
    assert "lm_head.bias" not in names(with_bias)


def test_left_pad():
    idx, mask = left_pad([[1, 2, 3], [4], [5, 6]], pad_id=9)
    assert idx.tolist() == [[1, 2, 3], [9, 9, 4], [9, 5, 6]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]


ROWS = [[1, 2, 3, 4, 5, 6], [7, 3], [2, 2, 9, 1], [5]]  # prompts of 6, 2, 4 and 1 tokens


@pytest.mark.parametrize("options", [{}, {"bias": True, "gelu": "tanh"}])
def test_padded_forward_equals_each_row_alone(options):
    """The second implementation: the loop forward of the row without its padding."""
    model = tiny(**options)
    idx, mask = left_pad(ROWS, pad_id=10)
    logits, _ = model(idx, attention_mask=mask)
    for i, row in enumerate(ROWS):
        alone = loop_forward(model, torch.tensor([row]))[0]  # (len, V)
        assert torch.allclose(logits[i, idx.size(1) - len(row) :].double(), alone, atol=ATOL), i
        assert torch.isfinite(logits[i]).all()  # pad positions too: a NaN there would leak through 0 * NaN


@pytest.mark.parametrize("temperature,use_cache", [(1.0, True), (0.7, False), (0, True)])
def test_padded_generate_equals_each_row_alone(temperature, use_cache):
    model = tiny()
    idx, mask = left_pad(ROWS, pad_id=10)
    u = torch.rand(len(ROWS), 12)
    out, lp = model.generate(idx, 12, temperature, eos_id=10, uniforms=u, use_cache=use_cache, attention_mask=mask)
    for i, row in enumerate(ROWS):
        out1, lp1 = model.generate(torch.tensor([row]), 12, temperature, eos_id=10, uniforms=u[i : i + 1])
        assert torch.equal(out[i], out1[0]), i
        assert torch.allclose(lp[i], lp1[0], atol=LOGP_ATOL), i
    # and the training forward on the padded sequences gives the log-probs generate reported
    seq = torch.cat([idx, out], dim=1)
    logp, _ = completion_logprobs(model, seq, idx.size(1), temperature or 1.0, prompt_mask=mask)
    m = completion_mask(out, 10).bool()
    if temperature:
        assert torch.allclose(logp[m], lp[m], atol=LOGP_ATOL)


def test_padded_generate_past_block_size_equals_alone():
    """Beyond block_size the window crops the padding first, then the oldest real tokens, as alone."""
    model = tiny(block_size=8)
    idx, mask = left_pad(ROWS, pad_id=10)
    u = torch.rand(len(ROWS), 10)
    out, lp = model.generate(idx, 10, 1.0, uniforms=u, attention_mask=mask)
    for i, row in enumerate(ROWS):
        out1, lp1 = model.generate(torch.tensor([row]), 10, 1.0, uniforms=u[i : i + 1])
        assert torch.equal(out[i], out1[0]) and torch.allclose(lp[i], lp1[0], atol=LOGP_ATOL), i


def test_all_ones_mask_is_the_unpadded_path_bit_for_bit():
    """Prompts of one length (the char tasks) keep their numbers: an all-ones mask changes nothing."""
    model = tiny()
    idx, u = torch.randint(0, 10, (5, 4)), torch.rand(5, 8)
    ones = torch.ones_like(idx)
    a, lp_a = model.generate(idx, 8, eos_id=10, uniforms=u)
    b, lp_b = model.generate(idx, 8, eos_id=10, uniforms=u, attention_mask=ones)
    assert torch.equal(a, b) and torch.equal(lp_a, lp_b)
    seq = torch.cat([idx, a], dim=1)
    assert torch.equal(completion_logprobs(model, seq, 4)[0], completion_logprobs(model, seq, 4, prompt_mask=ones)[0])


def test_padded_value_model_equals_alone():
    gpt = tiny()
    vm = ValueModel(gpt).double()
    with torch.no_grad():
        vm.v_head.weight.normal_()
    idx, mask = left_pad(ROWS, pad_id=10)
    comp = torch.randint(0, 10, (len(ROWS), 3))
    v = vm(torch.cat([idx, comp], dim=1), idx.size(1), prompt_mask=mask)
    for i, row in enumerate(ROWS):
        v1 = vm(torch.cat([torch.tensor([row]), comp[i : i + 1]], dim=1), len(row))
        assert torch.allclose(v[i], v1[0], atol=ATOL), i


def test_nanogpt_bias_false_has_no_bias_anywhere():
    """nanoGPT's bias=False drops every Linear and LayerNorm bias, so its checkpoints load strictly: a LayerNorm
    that ignored ln_bias would add a key the checkpoint lacks."""
    model = tiny(bias=False, ln_bias=False)
    assert [n for n, _ in model.named_parameters() if n.endswith("bias")] == []
    assert len(list(model.parameters())) == 2 + 2 * 6 + 1  # wte (= lm_head), wpe; per block 2 LN + 4 Linear; ln_f


def test_cache_path_refuses_more_than_one_new_token():
    """With a cache the attention has no causal mask among the new tokens, so a chunk of 2 would let the first see
    the second: the cache path must refuse it, not compute it."""
    model = tiny()
    _, cache = model.body(torch.randint(0, 10, (2, 4)))
    with pytest.raises(AssertionError, match="one token at a time"):
        model.body(torch.randint(0, 10, (2, 2)), cache)


def test_gpt_logprobs_passes_the_prompt_mask():
    """GPT.logprobs with a left-padded prompt gives each row's log-probs alone (dropping the mask would let real
    tokens attend to the pads)."""
    model = tiny()
    idx, mask = left_pad(ROWS, pad_id=10)
    comp = torch.randint(0, 10, (len(ROWS), 4))
    lp, _ = model.logprobs(torch.cat([idx, comp], dim=1), idx.size(1), prompt_mask=mask)
    for i, row in enumerate(ROWS):
        lp1, _ = model.logprobs(torch.cat([torch.tensor([row]), comp[i : i + 1]], dim=1), len(row))
        assert torch.allclose(lp[i], lp1[0], atol=LOGP_ATOL), i


def test_full_mask_keeps_the_unpadded_path_for_prompts_of_one_length():
    """No mask, or an all-ones one, gives None: attention stays is_causal (the flash kernel on CUDA, and the same
    numbers as generate's unpadded path); a padded prompt's mask is extended with ones over the completion."""
    seq = torch.randint(0, 10, (3, 7))
    assert full_mask(seq, 4, None) is None
    assert full_mask(seq, 4, torch.ones(3, 4, dtype=torch.long)) is None
    _, mask = left_pad([[1, 2, 3, 4], [5], [6, 7]], pad_id=10)
    assert full_mask(seq, 4, mask).tolist() == [[1] * 7, [0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]]


def test_padded_body_makes_its_tensors_on_the_input_device():
    """The meta device stands in for CUDA on a CPU-only machine: a query or key index made on the default device
    (the CPU) fails to combine with the meta mask, as it would with a CUDA one. (Embedding lookups accept CPU
    indices on meta, so the unpadded path's positions are checked only by the @cuda tests.)"""
    model = tiny().to("meta")
    idx, mask = left_pad(ROWS, pad_id=10)
    idx, mask = idx.to("meta"), mask.to("meta")
    h, _ = model.body(idx, attention_mask=mask)
    assert h.device.type == "meta" and h.shape == (len(ROWS), idx.size(1), 32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_padded_prompts_on_cuda_match_cpu():
    """Left padding on a GPU: every mask, position and index tensor must be made on the input's device."""
    model = tiny()
    idx, mask = left_pad(ROWS, pad_id=10)
    u = torch.rand(len(ROWS), 8)
    out, lp = model.generate(idx, 8, 1.0, eos_id=10, uniforms=u, attention_mask=mask)
    gpu = model.to("cuda")
    out_c, lp_c = gpu.generate(idx.cuda(), 8, 1.0, eos_id=10, uniforms=u.cuda(), attention_mask=mask.cuda())
    assert torch.equal(out, out_c.cpu()) and torch.allclose(lp, lp_c.cpu(), atol=1e-4)
    seq = torch.cat([idx, out], dim=1).cuda()
    logp, _ = completion_logprobs(gpu, seq, idx.size(1), prompt_mask=mask.cuda())
    assert torch.allclose(logp.cpu()[completion_mask(out, 10).bool()], lp[completion_mask(out, 10).bool()], atol=1e-4)


def test_packed_rows_equal_each_example_alone():
    """forward(segments=): each run of one segment id is a sequence of its own (attends to itself only,
    positions from 0), so every packed position's logits equal the example's logits alone. Bug: positions
    not restarted at a run's start, attention across runs, or a run's first token attending to nothing."""
    model = tiny(block_size=16)
    g = torch.Generator().manual_seed(3)
    lens = [5, 1, 7, 3]  # one row of 16 positions
    rows = [torch.randint(0, 10, (n,), generator=g) for n in lens]
    x = torch.cat(rows)[None]  # (1, 16)
    seg = torch.cat([torch.full((n,), i) for i, n in enumerate(lens)])[None]
    packed, _ = model(x, segments=seg)
    t = 0
    for r in rows:
        alone, _ = model(r[None])
        assert torch.allclose(packed[0, t : t + len(r)], alone[0], atol=ATOL)
        t += len(r)
    # the same id in two runs apart (padding between two rows' worth) is two sequences, not one
    seg2 = seg.clone()
    seg2[0, 5:6] = 7  # runs 0, 7, 0 (ids repeat), 2, 3
    again, _ = model(x, segments=torch.where(seg2 == 2, 0, seg2))
    assert torch.allclose(again[0, 6:13], packed[0, 6:13], atol=ATOL)


def test_packed_sft_batch_gives_the_unpacked_loss_and_gradient():
    """sft_batch_from_examples(..., pack=L): the same mean loss and gradient as one padded row per example,
    on fewer positions, the examples in order and no row over L. Bug: a target shifted at a row's seam, the
    padding trained on, an example split across rows."""
    from model import END
    from tasks import TaskError, sft_batch_from_examples

    tok = CharTokenizer("0123456789+=")
    ex = [("1+2=", "3"), ("10+20=", "30"), ("9+9=", "18"), ("5=", "5"), ("99+1=", "100"), ("1+2+3+4+5+6=", "21")]
    ex = [(p, c + END) for p, c in ex]  # 5, 8, 6, 3, 8 and 14 positions (the end token is a target only)
    x, y = sft_batch_from_examples(ex, tok)  # (6, 14)
    X, Y, S = sft_batch_from_examples(ex, tok, pack=16)
    assert X.shape == (4, 16) and S.tolist()[0][:14] == [0] * 5 + [1] * 8 + [-1]  # 5 + 8, 6 + 3, 8, 14
    assert (Y[S == -1] == -1).all() and (X[S == -1] == tok.eos_id).all()
    got = "".join(tok.decode(X[r][S[r] >= 0].tolist()) for r in range(len(X)))
    assert got == "".join(p + c.removesuffix(END) for p, c in ex)  # every example whole, in order
    model = GPT(GPTConfig(block_size=16, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32)).double()
    _, a = model(x, y)
    ga = torch.autograd.grad(a, list(model.parameters()))
    _, b = model(X, Y, segments=S)
    gb = torch.autograd.grad(b, list(model.parameters()))
    assert torch.allclose(a, b, atol=ATOL)
    assert all(torch.allclose(u, v, atol=ATOL) for u, v in zip(ga, gb, strict=True))
    with pytest.raises(TaskError, match="does not fit"):
        sft_batch_from_examples(ex, tok, pack=6)

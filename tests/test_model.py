"""model.py: KV-cache sampling equals full recompute, log-probs agree with the training forward."""

import pytest
import torch

from grpo import completion_mask
from model import GPT, CharTokenizer, GPTConfig, completion_logprobs


def tiny(block_size=24, seed=0):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=block_size, vocab_size=11, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():  # larger weights than the init, so distributions are far from uniform
        for p in model.parameters():
            p.mul_(3.0)
    return model


@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (0.7, 4), (0, None)])
def test_kv_cache_equals_full_recompute(temperature, top_k):
    model = tiny()
    idx = torch.randint(0, 10, (6, 5))
    u = torch.rand(6, 12)
    a, lp_a = model.generate(idx, 12, temperature=temperature, top_k=top_k, eos_id=10, uniforms=u, use_cache=True)
    b, lp_b = model.generate(idx, 12, temperature=temperature, top_k=top_k, eos_id=10, uniforms=u, use_cache=False)
    assert torch.equal(a, b)
    assert torch.allclose(lp_a, lp_b, atol=1e-5)


def test_cropped_context_beyond_block_size():
    """Past block_size the cache is dropped and the last block_size tokens recomputed (nanoGPT's crop)."""
    model = tiny(block_size=8)
    idx = torch.randint(0, 10, (3, 5))
    u = torch.rand(3, 10)
    a, lp_a = model.generate(idx, 10, uniforms=u, use_cache=True)
    b, lp_b = model.generate(idx, 10, uniforms=u, use_cache=False)
    assert torch.equal(a, b) and torch.allclose(lp_a, lp_b, atol=1e-5)


def test_generate_logps_match_training_forward():
    model = tiny()
    idx = torch.randint(0, 10, (8, 4))
    out, lp = model.generate(idx, 10, temperature=0.8, eos_id=10)
    logp, logits = completion_logprobs(model, torch.cat([idx, out], 1), 4, temperature=0.8)
    mask = completion_mask(out, 10)
    assert logits.shape == (8, 10, 11)
    assert torch.allclose(logp * mask, lp * mask, atol=1e-5)
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
    freq = torch.bincount(out[:, 0], minlength=11).float() / 20000
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
    with pytest.raises(AssertionError):
        CharTokenizer("a|b")

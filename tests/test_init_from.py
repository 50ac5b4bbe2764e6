"""utils/init_from.py: nanoGPT checkpoints, our policy.pth and Hugging Face GPT-2 folders load into our GPT with
the same logits as the source, the end token is appended only when asked, and bad inputs (a code-running
meta.pkl, a hub name offline, a missing path, a foreign checkpoint) fail with one-line InitErrors.

The nanoGPT source model is nanoGPT's forward written out from its state dict (nanogpt_logits); the GPT-2
source is transformers' own GPT2LMHeadModel. Weights are drawn large (std 0.3, biases and LayerNorm gains
non-trivial): at GPT-2's init (std 0.02) a wrong GELU, a missing bias or an untransposed square matrix
would hide below the tolerance.
"""

import json
import os
import pickle
import shutil
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from model import GPT, CharTokenizer, GPTConfig, left_pad
from utils.ckpt import save_checkpoint
from utils.init_from import InitError, load_pretrained

CHARS = "\n !,.abcdefghijklmnopqrstuvwxyz|"  # nanoGPT vocabularies may hold "|"


def nanogpt_state_dict(V, C=32, L=2, T=16, bias=True, seed=0):
    """Random weights under karpathy/nanoGPT model.py's names and shapes (nn.Linear: (out, in))."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.3
    sd = {"transformer.wte.weight": r(V, C), "transformer.wpe.weight": r(T, C)}
    lns = ["transformer.ln_f"] + [f"transformer.h.{i}.{n}" for i in range(L) for n in ("ln_1", "ln_2")]
    for p in lns:
        sd[p + ".weight"] = 1 + r(C)
        if bias:  # nanoGPT's LayerNorm(ndim, bias): no bias tensor at all when bias=False
            sd[p + ".bias"] = r(C)
    for i in range(L):
        for name, shape in {"c_attn": (3 * C, C), "c_proj": (C, C)}.items():
            sd[f"transformer.h.{i}.attn.{name}.weight"] = r(*shape)
            if bias:
                sd[f"transformer.h.{i}.attn.{name}.bias"] = r(shape[0])
        for name, shape in {"c_fc": (4 * C, C), "c_proj": (C, 4 * C)}.items():
            sd[f"transformer.h.{i}.mlp.{name}.weight"] = r(*shape)
            if bias:
                sd[f"transformer.h.{i}.mlp.{name}.bias"] = r(shape[0])
    sd["lm_head.weight"] = sd["transformer.wte.weight"]  # tied, saved under both names as nanoGPT does
    return sd


def nanogpt_logits(sd, idx, n_head):
    """nanoGPT's GPT.forward on every position, from the state dict: the second implementation."""
    B, T = idx.shape
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:T]  # (B, T, C)
    C = x.size(-1)
    ln = lambda x, p: F.layer_norm(x, (C,), sd[p + ".weight"], sd.get(p + ".bias"), 1e-5)
    lin = lambda x, p: F.linear(x, sd[p + ".weight"], sd.get(p + ".bias"))
    heads = lambda t: t.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, nh, T, hs)
    L = sum(k.endswith("ln_1.weight") for k in sd)
    for i in range(L):
        p = f"transformer.h.{i}."
        q, k, v = lin(ln(x, p + "ln_1"), p + "attn.c_attn").split(C, dim=2)
        y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True)
        x = x + lin(y.transpose(1, 2).contiguous().view(B, T, C), p + "attn.c_proj")
        x = x + lin(F.gelu(lin(ln(x, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")  # exact (erf) GELU
    return F.linear(ln(x, "transformer.ln_f"), sd["transformer.wte.weight"])  # (B, T, V)


def write_meta(path, chars):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": {c: i for i, c in enumerate(chars)}}
    with open(path, "wb") as f:
        pickle.dump(meta, f)  # as nanoGPT's data/shakespeare_char/prepare.py writes it


def write_nanogpt(path, sd, bias=True, vocab_size=None, dataset="tiny_char"):
    """A checkpoint in nanoGPT train.py's layout, keys prefixed by torch.compile."""
    V, C = sd["transformer.wte.weight"].shape
    args = dict(n_layer=2, n_head=2, n_embd=C, block_size=16, bias=bias, vocab_size=vocab_size or V, dropout=0.1)
    ck = {
        "model": {"_orig_mod." + k: v for k, v in sd.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 6e-4, "betas": (0.9, 0.99), "params": [0, 1]}]},
        "model_args": args,
        "iter_num": 5000,
        "best_val_loss": torch.tensor(1.4697),
        "config": {"dataset": dataset, "batch_size": 64, "compile": True, "init_from": "scratch"},
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(ck, path)


@pytest.fixture
def nanogpt(tmp_path, monkeypatch):
    """nanoGPT/out-tiny-char/ckpt.pt beside nanoGPT/data/tiny_char/meta.pkl, run from another folder."""
    sd = nanogpt_state_dict(len(CHARS))
    write_nanogpt(tmp_path / "nanoGPT" / "out-tiny-char" / "ckpt.pt", sd)
    write_meta(tmp_path / "nanoGPT" / "data" / "tiny_char" / "meta.pkl", CHARS)
    monkeypatch.chdir(tmp_path)  # ./data/tiny_char/ does not exist: found via the checkpoint's parent
    return str(tmp_path / "nanoGPT" / "out-tiny-char" / "ckpt.pt"), sd


def test_nanogpt_checkpoint_loads_exactly(nanogpt):
    path, sd = nanogpt
    model, tok, info = load_pretrained(path, needs_eos=False)
    assert model.config.vocab_size == len(CHARS) and tok.vocab_size == len(CHARS) and tok.eos_id is None
    assert model.config.bias and model.config.ln_bias and model.config.gelu == "none" and model.config.dropout == 0
    assert info["format"] == "nanogpt" and info["iter_num"] == 5000 and info["best_val_loss"] == pytest.approx(1.4697)
    assert not info["added_end_token"]
    idx = torch.tensor([tok.encode("the cat sat.\nhi"), tok.encode("a dog, a bird!\n")[:15]])
    with torch.no_grad():
        assert torch.equal(model.eval()(idx)[0], nanogpt_logits(sd, idx, n_head=2))
    assert tok.decode(tok.encode("hello, world.\n")) == "hello, world.\n"
    assert tok.decode(tok.encode("a|b")) == "a\u00a6b"  # a literal "|" never reads as the end token
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        tok.encode("ABC")


def test_nanogpt_without_bias_loads_strictly(tmp_path, monkeypatch):
    """bias=False: no Linear and no LayerNorm biases; the causal-mask buffer (nanoGPT without flash) is dropped."""
    sd = nanogpt_state_dict(len(CHARS), bias=False, seed=1)
    saved = dict(sd, **{f"transformer.h.{i}.attn.bias": torch.tril(torch.ones(1, 1, 16, 16)) for i in range(2)})
    write_nanogpt(tmp_path / "elsewhere" / "ckpt.pt", saved, bias=False)
    write_meta(tmp_path / "run" / "data" / "tiny_char" / "meta.pkl", CHARS)
    monkeypatch.chdir(tmp_path / "run")  # found as sample.py finds it: data/<dataset>/meta.pkl from here
    model, tok, _ = load_pretrained(str(tmp_path / "elsewhere" / "ckpt.pt"), needs_eos=False)
    assert not model.config.bias and not model.config.ln_bias
    assert model.transformer.ln_f.bias is None and model.transformer.h[0].mlp.c_fc.bias is None
    idx = torch.tensor([tok.encode("the end is near.")])
    with torch.no_grad():
        assert torch.equal(model.eval()(idx)[0], nanogpt_logits(sd, idx, n_head=2))


def test_end_token_appended_as_a_copy_of_newline(nanogpt):
    path, sd = nanogpt
    model, tok, info = load_pretrained(path, needs_eos=True)
    V = len(CHARS)
    assert model.config.vocab_size == tok.vocab_size == V + 1 and tok.eos_id == V and info["added_end_token"]
    idx = torch.tensor([tok.encode("the cat sat.\nhi")])
    with torch.no_grad():
        logits = model.eval()(idx)[0]  # (1, T, V+1)
    assert torch.equal(logits[..., :V], nanogpt_logits(sd, idx, n_head=2))  # the old tokens are untouched
    assert torch.equal(logits[..., V], logits[..., tok.encode("\n")[0]])  # stops where it would end a line
    assert tok.decode([*tok.encode("ab"), V, *tok.encode("c|")]) == "ab|c\u00a6"
    assert tok.decode_completion(torch.tensor([*tok.encode("ab"), V, *tok.encode("cd")])) == "ab|"


def test_end_token_after_padded_vocab_without_newline(tmp_path):
    """nanoGPT pads vocab_size (50257 -> 50304): the end token goes after the padding; no "\\n": a zero row."""
    chars = "abc "
    sd = nanogpt_state_dict(8)  # 4 characters, 4 padding ids
    write_nanogpt(tmp_path / "out" / "ckpt.pt", sd, dataset="none")
    write_meta(tmp_path / "meta.pkl", chars)
    model, tok, info = load_pretrained(
        str(tmp_path / "out" / "ckpt.pt"), needs_eos=True, meta=str(tmp_path / "meta.pkl")
    )
    assert tok.eos_id == 8 and model.config.vocab_size == tok.vocab_size == 9 and info["end_token_init"] == "zeros"
    with torch.no_grad():
        logits = model.eval()(torch.tensor([tok.encode("a cab")]))[0]
    assert torch.equal(logits[..., 8], torch.zeros_like(logits[..., 8]))
    assert tok.decode([0, 5, 8, 1]) == "a\ufffd|b"  # a padding id has no text


def test_policy_pth_loads(tmp_path):
    """Our own SFT policy.pth, written before GPTConfig had bias / ln_bias / gelu (their defaults apply)."""
    tok0 = CharTokenizer("0123456789+= ")
    src = GPT(GPTConfig(vocab_size=tok0.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32))
    cfg = {k: v for k, v in asdict(src.config).items() if k not in ("bias", "ln_bias", "gelu")}
    ck = {"model": src.state_dict(), "model_config": cfg, "task": "arith", "chars": tok0.chars, "info": {}}
    save_checkpoint(ck, tmp_path / "policy.pth")
    model, tok, info = load_pretrained(str(tmp_path / "policy.pth"), needs_eos=True)
    assert isinstance(tok, CharTokenizer) and tok.chars == tok0.chars and tok.eos_id == tok0.eos_id
    assert info["format"] == "policy" and info["task"] == "arith" and not info["added_end_token"]
    idx = torch.tensor([tok.encode("12+34=46")])
    with torch.no_grad():
        assert torch.equal(model.eval()(idx)[0], src.eval()(idx)[0])


@pytest.mark.parametrize("how", ["os.system", "exec"])
def test_meta_pkl_payload_is_refused(nanogpt, tmp_path, how):
    path, _ = nanogpt
    marker = tmp_path / f"pwned_{how}"

    class Payload:
        def __reduce__(self):
            if how == "os.system":
                return (os.system, (f"touch {marker}",))
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    bad = tmp_path / "evil" / "meta.pkl"
    bad.parent.mkdir()
    bad.write_bytes(pickle.dumps({"vocab_size": 3, "itos": Payload(), "stoi": {}}))
    with pytest.raises(InitError, match="refused") as e:
        load_pretrained(path, needs_eos=True, meta=str(bad))
    assert "\n" not in str(e.value) and not marker.exists()
    pickle.loads(bad.read_bytes())  # the payload is live: a plain pickle.load would have run it
    assert marker.exists()


def test_meta_pkl_inconsistent_or_missing(nanogpt, tmp_path):
    path, _ = nanogpt
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"vocab_size": 3, "itos": {0: "a", 1: "b", 2: "c"}, "stoi": {"a": 0, "b": 2, "c": 1}}))
    with pytest.raises(InitError, match="inconsistent"):
        load_pretrained(path, needs_eos=True, meta=str(bad))
    write_meta(tmp_path / "big.pkl", CHARS + "ABC")  # more characters than the model has ids
    with pytest.raises(InitError, match="token ids"):
        load_pretrained(path, needs_eos=True, meta=str(tmp_path / "big.pkl"))
    os.remove(tmp_path / "nanoGPT" / "data" / "tiny_char" / "meta.pkl")
    with pytest.raises(InitError, match="--meta .* --tokenizer") as e:
        load_pretrained(path, needs_eos=True)
    assert "\n" not in str(e.value)


def test_bad_pickles_and_policy_files_fail_in_one_line(nanogpt, tmp_path):
    """Issue 18: bytes that unpickle to no dict (AttributeError inside pickle), a policy.pth whose chars hold the
    end token (an assert in CharTokenizer), a model_config of the wrong type (a TypeError in GPT): one line each."""
    path, _ = nanogpt
    odd = tmp_path / "odd.pkl"
    odd.write_bytes(b"K\x01K\x02a.")  # push 1, push 2, APPEND: 1.append(2)
    with pytest.raises(InitError, match="refused") as e:
        load_pretrained(path, needs_eos=True, meta=str(odd))
    errors = [e]
    tok0 = CharTokenizer("0123456789+=")
    src = GPT(GPTConfig(vocab_size=tok0.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32))
    good = {"model": src.state_dict(), "model_config": asdict(src.config), "task": "t", "chars": tok0.chars}
    for change, needle in [
        ({"chars": "0123456789+=|"}, "chars must be"),
        ({"chars": 12}, "chars must be"),
        ({"model_config": {**asdict(src.config), "n_layer": "1"}}, "wrong type: n_layer='1'"),
        ({"model_config": {**asdict(src.config), "bias": 0}}, "wrong type: bias=0"),
    ]:
        save_checkpoint({**good, **change}, tmp_path / "p.pth")
        with pytest.raises(InitError, match=needle) as e:
            load_pretrained(str(tmp_path / "p.pth"), needs_eos=True)
        errors.append(e)
    assert all("\n" not in str(e.value) for e in errors)
    save_checkpoint({**good, "model_config": {**asdict(src.config), "dropout": 0}}, tmp_path / "p.pth")
    load_pretrained(str(tmp_path / "p.pth"), needs_eos=True)  # an int where a float goes is fine


def test_bad_specs_fail_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    errors = []
    with pytest.raises(InitError, match="no such file") as e:
        load_pretrained(str(tmp_path / "nope.pt"), needs_eos=True)
    errors.append(e)
    torch.save({"model": {}, "step": 3}, tmp_path / "other.pt")
    with pytest.raises(InitError, match="lacks model_args.*lacks model_config, chars") as e:
        load_pretrained(str(tmp_path / "other.pt"), needs_eos=True)
    errors.append(e)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(InitError, match="refused|corrupt") as e:
        load_pretrained(str(tmp_path / "junk.pt"), needs_eos=True)
    errors.append(e)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InitError, match="not a Hugging Face model folder") as e:
        load_pretrained(str(tmp_path / "empty"), needs_eos=True)
    errors.append(e)
    assert all("\n" not in str(e.value) for e in errors)


def test_hub_name_offline_says_what_to_download(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)  # read once, when huggingface_hub is imported
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "cache"))  # empty, even where gpt2 is cached
    monkeypatch.chdir(tmp_path)  # no ./gpt2 folder
    with pytest.raises(InitError) as e:
        load_pretrained("gpt2", needs_eos=True)
    msg = str(e.value)
    assert "\n" not in msg and "save_pretrained('gpt2-local')" in msg and "--init-from gpt2-local" in msg


def test_gpt2_folder_matches_transformers(tiny_gpt2):
    path, hf, hf_tok = tiny_gpt2
    model, tok, info = load_pretrained(path, needs_eos=True)
    assert info["format"] == "hf" and not info["added_end_token"] and model.config.gelu == "tanh"
    assert tok.eos_id == hf_tok.eos_token_id and model.config.vocab_size == tok.vocab_size == len(hf_tok)
    model.eval()
    idx = torch.tensor([tok.encode("the cat sat on the mat, said the dog.")])
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], hf(idx).logits, atol=1e-4, rtol=0)
    rows = [tok.encode(s) for s in ("the cat", "hello world, the end is near.", "a")]
    idx, mask = left_pad(rows, tok.pad_id)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # as Hugging Face's generate computes them
    with torch.no_grad():
        ours = model(idx, attention_mask=mask)[0]
        theirs = hf(input_ids=idx, attention_mask=mask, position_ids=pos).logits
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-4, rtol=0)


def test_hf_tokenizer_protocol(tiny_gpt2):
    path, _, _ = tiny_gpt2
    _, tok, _ = load_pretrained(path, needs_eos=False)
    s = "hello world, the cat!\n"
    assert tok.decode(tok.encode(s)) == s
    assert tok.decode(tok.encode("a | b")) == "a \u00a6 b"
    ids = tok.encode("the cat") + [tok.eos_id] + tok.encode(" sat")
    assert tok.decode(ids) == "the cat| sat"
    assert tok.decode_completion(ids) == "the cat|"
    assert 0 <= tok.pad_id < tok.vocab_size


def test_gpt2_folder_refuses_what_does_not_map(tiny_gpt2, tmp_path):
    """A config our GPT cannot express, and a folder missing a weight (which HF would fill with random numbers)."""
    from safetensors.torch import load_file, save_file

    src, _, _ = tiny_gpt2
    relu = shutil.copytree(src, tmp_path / "relu")
    cfg = json.loads((relu / "config.json").read_text())
    (relu / "config.json").write_text(json.dumps(dict(cfg, activation_function="relu", layer_norm_epsilon=1e-6)))
    with pytest.raises(InitError, match="activation_function 'relu'; layer_norm_epsilon 1e-06"):
        load_pretrained(str(relu), needs_eos=True)
    holed = shutil.copytree(src, tmp_path / "holed")
    sd = load_file(holed / "model.safetensors")
    del sd["transformer.h.1.mlp.c_fc.bias"]
    save_file(sd, holed / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InitError, match=r"lack \['transformer.h.1.mlp.c_fc.bias'\]"):
        load_pretrained(str(holed), needs_eos=True)

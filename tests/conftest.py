"""Shared test helpers: run a script as a user would, and a tiny SFT policy built once per session."""

import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# a model small enough that a handful of steps take a second or two on a CPU
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32"]


def run(script, *args, timeout=300, env=None):
    """Run `python script args` from the repo root; returns the CompletedProcess (never raises on rc)."""
    e = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    e.update(env or {})
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=e,
    )


@pytest.fixture(scope="session")
def tiny_sft(tmp_path_factory):
    """out-dir holding a tiny arithmetic SFT policy.pth (trained once, copied by the tests that need it)."""
    d = tmp_path_factory.mktemp("sft")
    p = run(
        "train_grpo.py", "--steps", 1, "--sft-steps", 60, *TINY, "--out-dir", d, "--log", d / "g.csv", "--no-progress"
    )
    assert p.returncode == 0, p.stderr
    return d


@pytest.fixture
def sft_dir(tiny_sft, tmp_path):
    """A fresh out-dir with a copy of the tiny SFT policy."""
    d = tmp_path / "out"
    d.mkdir()
    shutil.copy(tiny_sft / "policy.pth", d / "policy.pth")
    return d


def exact_log(r):
    """A float32 x with torch.exp(x) == r exactly, so that a ratio can sit exactly on a clip boundary."""
    x = torch.tensor(math.log(r))
    for _ in range(8):
        e = torch.exp(x).item()
        if e == r:
            return x.item()
        x = torch.nextafter(x, torch.tensor(math.inf if e < r else -math.inf))
    raise AssertionError(f"no float32 log of {r}")


GPT2_TEXT = ["the cat sat on the mat.", "a dog, a cat and a bird!", "hello world\n", "the end is near, said the cat."]


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    """A random 2-layer GPT-2 and a byte-level BPE tokenizer trained here, saved with save_pretrained."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    bpe.train_from_iterator(
        GPT2_TEXT, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=alphabet)
    )
    hf_tok = transformers.GPT2TokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=len(hf_tok))
    hf = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    d = tmp_path_factory.mktemp("gpt2") / "tiny-gpt2"
    hf.save_pretrained(d)
    hf_tok.save_pretrained(d)
    return str(d), hf.eval(), hf_tok

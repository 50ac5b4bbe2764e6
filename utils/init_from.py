"""Start RL from a model the user brings: `train_grpo.py --init-from SPEC` (nanoGPT's `init_from`).

load_pretrained(spec, needs_eos=...) -> (GPT, tokenizer, info). What SPEC may be, one line each:
  - a nanoGPT ckpt.pt (karpathy/nanoGPT train.py): `model` (keys maybe prefixed `_orig_mod.` by torch.compile)
    and `model_args`; bias=False there means no Linear and no LayerNorm bias; exact GELU. Its vocabulary is a
    char meta.pkl: --meta, else data/<config['dataset']>/meta.pkl from the current folder or the checkpoint
    folder's parent (nanoGPT's layout), else a Hugging Face --tokenizer (GPT-2 BPE checkpoints, vocab 50304).
    An explicit --tokenizer wins over a meta.pkl found by looking.
  - our own policy.pth (utils/sft.py): `model`, `model_config`, `chars` -> GPT + model.CharTokenizer.
  - "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl" or a folder written by save_pretrained: Hugging Face's
    GPT2LMHeadModel mapped as nanoGPT's GPT.from_pretrained does (Conv1D weights transposed, tanh GELU).
Files are read with torch.load(weights_only=True) (utils.ckpt) and meta.pkl with an unpickler that refuses
every global, so neither can run code. Every bad input raises InitError with a one-line message
(CheckpointError from utils.ckpt is converted to it): the driver prints it and exits 2.

Tokenizers share model.CharTokenizer's protocol (encode, decode, decode_completion, eos_id, pad_id,
vocab_size = the model's), so reward functions work unchanged: the end token prints as model.END ("|") and a
literal "|" in text prints as "¦", so text can never pass for the end token; ids without text print "\ufffd".

The end token. A task whose completions stop at an end token (needs_eos=True) needs one in the vocabulary;
nanoGPT's char vocabularies have none. We then append one id (at the model's vocab_size, past nanoGPT's
padding) whose tied embedding row is a copy of "\n"'s, so the model first stops about where it would end
a line: the two tokens get the same logit, so where "\n" had probability p each now gets p/(1+p) (together
2p/(1+p), not p), or zeros without "\n" in the vocabulary. With
needs_eos=False the vocabulary is left as it is (eos_id None when it has no end token).
"""

import itertools
import os
import pickle
from dataclasses import fields, replace

import torch

from model import END, GPT, CharTokenizer, GPTConfig
from utils.ckpt import CheckpointError, load_checkpoint

BAR = "\u00a6"  # "¦": how a literal "|" prints
UNK = "\ufffd"  # an id with no text (nanoGPT's vocabulary padding)
GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


class InitError(ValueError):
    """A --init-from (or --meta / --tokenizer) the loader cannot use. The message is one line."""


def _line(e):
    return next((s.strip() for s in str(e).splitlines() if s.strip()), type(e).__name__)


class _Tokenizer:
    def decode_completion(self, ids):
        """Text up to and including the first end token (what the reward functions see)."""
        ids = [int(i) for i in ids]
        return self.decode(ids[: ids.index(self.eos_id) + 1] if self.eos_id in ids else ids)


class VocabTokenizer(_Tokenizer):
    """A nanoGPT meta.pkl character vocabulary: id i is chars[i], as in the file."""

    def __init__(self, chars, vocab_size):
        self.chars, self.stoi = chars, {c: i for i, c in enumerate(chars)}
        self.vocab_size, self.eos_id, self.pad_id = vocab_size, None, 0  # pads are masked: any real id

    def encode(self, s):
        unknown = set(s) - self.stoi.keys()
        if unknown:
            raise ValueError(f"characters {''.join(sorted(unknown))!r} are not in the model's vocabulary")
        return [self.stoi[c] for c in s]

    def decode(self, ids):
        text = lambda i: END if i == self.eos_id else self.chars[i].replace(END, BAR) if i < len(self.chars) else UNK
        return "".join(text(int(i)) for i in ids)


class HFTokenizer(_Tokenizer):
    """A Hugging Face tokenizer (GPT-2 BPE); decodes each run of text ids in one call, so multi-byte
    characters split across BPE tokens come out whole."""

    def __init__(self, hf, vocab_size):
        self.hf, self.n_text, self.vocab_size = hf, len(hf), vocab_size
        self.eos_id = hf.eos_token_id
        self.pad_id = next(i for i in (hf.pad_token_id, hf.eos_token_id, 0) if i is not None)

    def encode(self, s):
        return self.hf.encode(s, add_special_tokens=False)

    def decode(self, ids):
        parts = []
        is_text = lambda i: i != self.eos_id and i < self.n_text
        for text, run in itertools.groupby((int(i) for i in ids), key=is_text):
            run = list(run)
            if text:
                parts.append(self.hf.decode(run, clean_up_tokenization_spaces=False).replace(END, BAR))
            else:
                parts += [END if i == self.eos_id else UNK for i in run]
        return "".join(parts)


class _NoGlobals(pickle.Unpickler):
    """meta.pkl holds dicts, strings and ints, which need no globals; any global (os.system, exec, a class)
    is what a code-running pickle calls, so refusing them all makes loading safe."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it asks for {module}.{name}")


def _read_meta(path, model_vocab):
    if not os.path.isfile(path):
        raise InitError(f"meta {path} not found")
    try:
        with open(path, "rb") as f:
            m = _NoGlobals(f).load()
    except Exception as e:  # noqa: BLE001 -- bytes that are no pickle fail in many ways (b"K\x01K\x02a.": AttributeError)
        raise InitError(f"meta {path} refused: not a plain nanoGPT meta.pkl ({_line(e)})") from None
    if not (isinstance(m, dict) and {"vocab_size", "itos", "stoi"} <= m.keys()):
        raise InitError(f"meta {path} is not a nanoGPT meta.pkl (a dict with vocab_size, itos, stoi)")
    n, itos, stoi = m["vocab_size"], m["itos"], m["stoi"]
    ok = type(n) is int and isinstance(itos, dict) and isinstance(stoi, dict) and len(itos) == len(stoi) == n
    chars = [itos.get(i) for i in range(n)] if ok else []
    ok = ok and all(isinstance(c, str) and len(c) == 1 for c in chars) and stoi == {c: i for i, c in enumerate(chars)}
    if not ok:
        raise InitError(f"meta {path} is inconsistent: need vocab_size n, itos {{0..n-1: char}} and stoi its inverse")
    if n > model_vocab:
        raise InitError(f"meta {path} has {n} characters but the model only {model_vocab} token ids")
    return VocabTokenizer(chars, model_vocab)


def _hf_tokenizer(name, model_vocab):
    import transformers  # here, so that nanoGPT char checkpoints and policy.pth never import it

    try:
        hf = transformers.AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise InitError(f"no Hugging Face tokenizer at {name!r} ({_line(e)})") from None
    if len(hf) > model_vocab:
        raise InitError(f"tokenizer {name!r} has {len(hf)} tokens but the model only {model_vocab} token ids")
    return HFTokenizer(hf, model_vocab)


def _from_nanogpt(path, ck, meta, tokenizer):
    args = ck["model_args"]
    need = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size")
    if not isinstance(args, dict) or not set(need) <= args.keys():
        raise InitError(f"{path}: model_args must hold {', '.join(need)}")
    b = bool(args["bias"])
    cfg = GPTConfig(**{k: args[k] for k in need if k != "bias"}, dropout=0.0, bias=b, ln_bias=b, gelu="none")
    sd = {k.removeprefix("_orig_mod."): v for k, v in ck["model"].items()}
    sd = {k: v for k, v in sd.items() if not k.endswith(".attn.bias")}  # the causal mask buffer, not a weight
    if meta and tokenizer:
        raise InitError("pass --meta (a char vocabulary) or --tokenizer (BPE), not both")
    dataset = ck["config"].get("dataset") if isinstance(ck.get("config"), dict) else None
    parent = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    if not (meta or tokenizer) and isinstance(dataset, str):  # where nanoGPT's sample.py looks, then its layout
        found = [p for p in (os.path.join(d, "data", dataset, "meta.pkl") for d in (".", parent)) if os.path.isfile(p)]
        meta = found[0] if found else None
    if not (meta or tokenizer):
        raise InitError(
            f"{path}: no data/{dataset}/meta.pkl here or in {parent}: pass --meta PATH/meta.pkl for a char model "
            "or --tokenizer NAME_OR_DIR (e.g. gpt2-local) for a GPT-2 BPE one"
        )
    tok = _read_meta(meta, cfg.vocab_size) if meta else _hf_tokenizer(tokenizer, cfg.vocab_size)
    info = {"format": "nanogpt", "tokenizer": meta or tokenizer, "iter_num": ck.get("iter_num")}
    if "best_val_loss" in ck:
        info["best_val_loss"] = float(ck["best_val_loss"])  # a tensor in nanoGPT's files
    return cfg, sd, tok, info


def _from_file(path, meta, tokenizer):
    try:
        ck = load_checkpoint(path)
    except CheckpointError as e:
        raise InitError(str(e)) from None
    if not isinstance(ck, dict) or not isinstance(ck.get("model", {}), dict):
        raise InitError(f"{path} is not a checkpoint dict (with a state dict under 'model')")
    nano, policy = ("model", "model_args"), ("model", "model_config", "chars")
    if set(nano) <= ck.keys():
        return _from_nanogpt(path, ck, meta, tokenizer)
    if not set(policy) <= ck.keys():
        lacks = lambda keys: ", ".join(k for k in keys if k not in ck)
        raise InitError(
            f"{path} is neither a nanoGPT ckpt.pt (lacks {lacks(nano)}) nor a policy.pth (lacks {lacks(policy)})"
        )
    if meta or tokenizer:
        raise InitError(f"{path} is a policy.pth with its own vocabulary: drop --meta / --tokenizer")
    known = {f.name: type(f.default) for f in fields(GPTConfig)}  # files from before bias/ln_bias/gelu: defaults
    mc = ck["model_config"]
    if not isinstance(mc, dict) or not set(mc) <= known.keys():
        raise InitError(f"{path}: model_config is not a dict of GPTConfig fields {sorted(known)}")
    wrong = [
        f"{k}={v!r}" for k, v in mc.items() if type(v) is not known[k] and not (known[k] is float and type(v) is int)
    ]
    if wrong:
        raise InitError(f"{path}: model_config has values of the wrong type: {', '.join(wrong)}")
    chars = ck["chars"]
    if not isinstance(chars, str) or END in chars or len(set(chars)) != len(chars):
        raise InitError(f"{path}: chars must be a string of distinct characters without {END!r}, not {chars!r:.40}")
    cfg, tok = GPTConfig(**mc), CharTokenizer(chars)
    if tok.vocab_size != cfg.vocab_size:
        raise InitError(f"{path}: {len(tok.chars)} chars + end token != vocab_size {cfg.vocab_size}")
    return cfg, ck["model"], tok, {"format": "policy", "task": ck.get("task")}


def _from_hf(spec, tokenizer):
    import logging

    import transformers

    # their retry warnings would print before our one-line error; the error says what failed
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()

    try:
        c = transformers.AutoConfig.from_pretrained(spec)
        hf, load = (None, {})
        if c.model_type == "gpt2":  # output_loading_info: HF fills missing weights with random ones, silently
            hf, load = transformers.GPT2LMHeadModel.from_pretrained(spec, config=c, output_loading_info=True)
    except (OSError, ValueError) as e:
        if os.path.isdir(spec):
            raise InitError(f"{spec} is not a Hugging Face model folder from save_pretrained ({_line(e)})") from None
        get = "from transformers import GPT2LMHeadModel as M, AutoTokenizer as T; " + "; ".join(
            f"{m}.from_pretrained('{spec}').save_pretrained('{spec}-local')" for m in "MT"
        )
        raise InitError(
            f"cannot download {spec!r} from the Hugging Face hub (offline?): on a machine with network run "
            f'python -c "{get}", copy the folder {spec}-local here and pass --init-from {spec}-local'
        ) from None
    if hf is None:
        raise InitError(f"{spec} is a {c.model_type!r} model: only GPT-2 maps onto our GPT")
    if load.get("missing_keys"):
        raise InitError(f"{spec}: the saved weights lack {sorted(load['missing_keys'])[:4]}")
    gelu = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}.get(c.activation_function)
    bad = [msg for msg, wrong in {
        f"activation_function {c.activation_function!r}": gelu is None,
        f"layer_norm_epsilon {c.layer_norm_epsilon}": c.layer_norm_epsilon != 1e-5,
        f"n_inner {c.n_inner}": c.n_inner not in (None, 4 * c.n_embd),
        "non-standard attention scaling": c.scale_attn_by_inverse_layer_idx or not c.scale_attn_weights,
        "untied lm_head": not c.tie_word_embeddings,
    }.items() if wrong]  # fmt: skip
    if bad:
        raise InitError(f"{spec}: unsupported GPT-2 config: {'; '.join(bad)}")
    sd = {}
    for k, v in hf.state_dict().items():
        if k.endswith((".attn.bias", ".attn.masked_bias")):  # causal-mask buffers, not weights
            continue
        sd[k] = v.float().t() if k.endswith(CONV1D) else v.float()  # Conv1D stores (in, out): transpose
    sd["lm_head.weight"] = sd["transformer.wte.weight"]  # tied
    cfg = GPTConfig(
        block_size=c.n_positions, vocab_size=c.vocab_size, n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd,
        dropout=0.0, bias=True, ln_bias=True, gelu=gelu,
    )  # fmt: skip
    return cfg, sd, _hf_tokenizer(tokenizer or spec, cfg.vocab_size), {"format": "hf", "tokenizer": tokenizer or spec}


def _newline_id(tok):
    try:
        ids = tok.encode("\n")
    except ValueError:
        return None
    return ids[0] if len(ids) == 1 else None


def load_pretrained(spec, *, needs_eos, meta=None, tokenizer=None, device="cpu"):
    """spec: a checkpoint file, a save_pretrained folder or a GPT-2 name -> (model, tokenizer, info).

    needs_eos: the task stops at an end token; append one if the vocabulary lacks it (module docstring).
    meta / tokenizer: a nanoGPT checkpoint's vocabulary (meta.pkl path; Hugging Face name or folder);
    tokenizer also replaces a save_pretrained folder's own. Raises InitError (one line) for bad input."""
    if os.path.isfile(spec):
        cfg, sd, tok, info = _from_file(spec, meta, tokenizer)
    elif os.path.isdir(spec) or spec in GPT2_NAMES:
        if meta:
            raise InitError("--meta is for nanoGPT char checkpoints, not Hugging Face models")
        cfg, sd, tok, info = _from_hf(spec, tokenizer)
    else:
        raise InitError(f"--init-from {spec!r}: no such file or folder, and not one of {', '.join(GPT2_NAMES)}")
    info.update(source=spec, added_end_token=bool(needs_eos and tok.eos_id is None))
    if info["added_end_token"] and "transformer.wte.weight" in sd:  # (a state dict without it fails below)
        w, nl = sd["transformer.wte.weight"], _newline_id(tok)  # (V, C), tied with lm_head
        row = w[nl] if nl is not None else torch.zeros_like(w[0])
        sd["transformer.wte.weight"] = sd["lm_head.weight"] = torch.cat([w, row[None]])  # (V+1, C)
        tok.eos_id, tok.vocab_size = cfg.vocab_size, cfg.vocab_size + 1
        cfg = replace(cfg, vocab_size=cfg.vocab_size + 1)
        info["end_token_init"] = "copy of newline" if nl is not None else "zeros"
    model = GPT(cfg)
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # a shape mismatch: the message's second line names the tensor
        raise InitError(f"{spec}: weights do not fit its config ({_line(str(e).split(':', 1)[-1])})") from None
    if missing or unexpected:
        raise InitError(f"{spec}: weights do not match the model: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return model.to(device), tok, info

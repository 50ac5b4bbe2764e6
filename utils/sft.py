"""The starting policy, shared by every driver: trained here (SFT) or loaded from what the user brings.

`python train_grpo.py` (and train_ppo.py, simple_example.py) call load_or_train_sft: with
<out-dir>/policy.pth present it is loaded (and checked against the flags); without it a fresh char GPT
is trained on the task's SFT data (its sft_batch, made from sft_examples for most tasks) and saved there.
With --init-from (load_policy) the drivers start instead from a nanoGPT checkpoint, a policy.pth or
GPT-2 weights (utils/init_from.py), and run no SFT. Either way that policy is the RL starting point
and the frozen reference pi_ref.

SFT can be deliberately partial: a task with sft_progress (arithmetic: greedy accuracy on 500 *training*
problems) stops as soon as it reaches --sft-target-acc (default 0.4), so GRPO has something left to
learn. The held-out problems are never used to decide anything.
"""

import os
import time
from dataclasses import asdict, fields

import torch
import torch.distributed as dist

from model import GPT, CharTokenizer, GPTConfig
from tasks import check_scratch
from utils.ckpt import CheckpointError, load_checkpoint, save_checkpoint
from utils.common import at_least, console


def add_model_args(parser):
    """The model-shape and SFT flags every driver shares."""
    parser.add_argument("--n-layer", type=int, default=3, help="transformer blocks of the policy")
    parser.add_argument("--n-head", type=int, default=4, help="attention heads per block")
    parser.add_argument("--n-embd", type=int, default=128, help="embedding width (divisible by --n-head)")
    parser.add_argument(
        "--sft-steps",
        type=at_least(0),
        default=None,
        help="most SFT steps when policy.pth is missing (default: the task's sft_steps: 1500, chain_tool 3500)",
    )
    parser.add_argument("--sft-batch-size", type=int, default=64, help="sequences per SFT step")
    parser.add_argument("--sft-lr", type=float, default=1e-3, help="SFT learning rate (AdamW)")
    parser.add_argument(
        "--sft-target-acc",
        type=float,
        default=0.4,
        help="arithmetic: stop SFT once greedy accuracy on 500 training problems reaches this (partial SFT)",
    )


def add_init_args(parser):
    """--init-from and what it needs: the RL drivers' choice of starting model (nanoGPT's init_from)."""
    parser.add_argument(
        "--init-from",
        default="scratch",
        help="scratch (SFT a char GPT on the task, kept in <out-dir>/policy.pth) | path to a nanoGPT ckpt.pt | "
        "path to a policy.pth | gpt2, gpt2-medium, gpt2-large, gpt2-xl | a save_pretrained directory",
    )
    parser.add_argument(
        "--meta", default=None, help="nanoGPT checkpoint: its meta.pkl (default data/<dataset>/meta.pkl, as sample.py)"
    )
    parser.add_argument(
        "--tokenizer", default=None, help="nanoGPT checkpoint without meta.pkl: a Hugging Face tokenizer name or folder"
    )


def model_config(task, tok, args):
    return GPTConfig(
        block_size=task.block_size,
        vocab_size=tok.vocab_size,
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_embd=args.n_embd,
    )


def check_model_config(saved, cfg, path):
    """Refuse (one line) a checkpoint whose model config differs from the one the flags build."""
    want = asdict(cfg)
    default = {f.name: f.default for f in fields(GPTConfig)}  # files written before a field existed
    diff = [f"{k}={saved.get(k, default[k])} (flags: {want[k]})" for k in want if saved.get(k, default[k]) != want[k]]
    if diff:
        raise CheckpointError(
            f"{path} does not match the flags: {', '.join(diff)}; use matching flags or another --out-dir"
        )


def sft_steps(task, args):
    """--sft-steps, or the task's default (sft_steps, 1500 when it has none)."""
    return args.sft_steps if args.sft_steps is not None else getattr(task, "sft_steps", 1500)


def sft_train(task, tok, cfg, args, device, log=print):
    """Train a fresh GPT on the task's SFT data; returns (model, info dict)."""
    torch.manual_seed(args.seed)
    model = GPT(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.sft_lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed)
    t0, info = time.time(), {}
    for step in range(1, sft_steps(task, args) + 1):
        x, y, *segments = task.sft_batch(g, args.sft_batch_size, tok)  # (x, y) or packed rows (x, y, segments)
        segments = segments[0].to(device) if segments else None
        _, loss = model(x.to(device), y.to(device), segments=segments)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        info = {"sft_steps": step, "sft_loss": loss.item()}
        if getattr(task, "sft_progress", None) and step % 25 == 0:  # partial SFT (arithmetic: train-split accuracy)
            acc = task.sft_progress(model, tok, device)
            info["sft_train_acc"] = acc
            if acc >= args.sft_target_acc:
                break
        if step % 100 == 0:
            log(f"sft step {step}: loss {loss.item():.3f}")
    info["sft_time_s"] = time.time() - t0
    return model, info


def load_or_train_sft(task, args, device, master=True, log=print):
    """The SFT policy from <out-dir>/policy.pth, trained and saved first if missing.

    Returns (model, tokenizer, info). Raises CheckpointError for a corrupt or mismatched file.
    Under DDP only rank 0 trains and saves; the others wait and load the file.
    """
    tok = CharTokenizer(task.chars)
    cfg = model_config(task, tok, args)
    path = os.path.join(args.out_dir, "policy.pth")
    if not os.path.exists(path) and master:
        log(f"no {path}: training the SFT policy ({sft_steps(task, args)} steps at most)")
        model, info = sft_train(task, tok, cfg, args, device, log)
        ck = {
            "model": model.state_dict(),
            "model_config": asdict(cfg),
            "task": task.name,
            "chars": tok.chars,
            "info": info,
        }
        save_checkpoint(ck, path)
        log(f"saved {path}: {console(info)}")
    if dist.is_initialized():
        dist.barrier()
    ck = load_checkpoint(path, map_location=device)
    if ck.get("task") != task.name:
        raise CheckpointError(
            f"{path} is an SFT policy for task {ck.get('task')!r}, not {task.name!r}; use another --out-dir"
        )
    check_model_config(ck["model_config"], cfg, path)
    if ck.get("chars") != tok.chars:  # same shape, other characters: every id would mean another character
        raise CheckpointError(
            f"{path} was trained on the characters {ck.get('chars')!r:.60}, this task uses {tok.chars!r:.60}; "
            "use another --out-dir"
        )
    model = GPT(cfg).to(device)
    model.load_state_dict(ck["model"])
    return model, tok, ck.get("info", {})


def load_policy(task, args, device, master=True, log=print):
    """The RL starting policy: --init-from scratch (load_or_train_sft) or a model the user brings
    (utils/init_from.py, no SFT). Returns (model, tokenizer, info). Raises CheckpointError, TaskError or
    InitError (both ValueError) with a one-line message."""
    if args.init_from == "scratch":
        check_scratch(task, f"--task {args.task}")
        return load_or_train_sft(task, args, device, master, log)
    from utils.init_from import load_pretrained  # transformers is imported only on this path

    model, tok, info = load_pretrained(
        args.init_from, needs_eos=getattr(task, "uses_eos", True), meta=args.meta, tokenizer=args.tokenizer
    )
    log(f"init from {args.init_from}: {console(info)}")
    return model.to(device), tok, info

"""Supervised fine-tuning of the starting policy, shared by every driver.

`python train_grpo.py` (and train_ppo.py, simple_example.py) call load_or_train_sft: with
<out-dir>/policy.pth present it is loaded (and checked against the flags); without it a fresh GPT is
trained on the task's SFT data and saved there. That policy is the RL starting point and the frozen
reference pi_ref.

SFT is deliberately partial on arithmetic: it stops as soon as greedy accuracy on 500 *training*
problems reaches --sft-target-acc (default 0.4), so GRPO has something left to learn. The held-out
problems are never used to decide anything.
"""

import os
import time
from dataclasses import asdict

import torch
import torch.distributed as dist

from model import GPT, CharTokenizer, GPTConfig
from utils.ckpt import CheckpointError, load_checkpoint, save_checkpoint


def add_model_args(parser):
    """The model-shape and SFT flags every driver shares."""
    parser.add_argument("--n-layer", type=int, default=3, help="transformer blocks of the policy")
    parser.add_argument("--n-head", type=int, default=4, help="attention heads per block")
    parser.add_argument("--n-embd", type=int, default=128, help="embedding width (divisible by --n-head)")
    parser.add_argument("--sft-steps", type=int, default=1500, help="most SFT steps when policy.pth is missing")
    parser.add_argument("--sft-batch-size", type=int, default=64, help="sequences per SFT step")
    parser.add_argument("--sft-lr", type=float, default=1e-3, help="SFT learning rate (AdamW)")
    parser.add_argument(
        "--sft-target-acc",
        type=float,
        default=0.4,
        help="arithmetic: stop SFT once greedy accuracy on 500 training problems reaches this (partial SFT)",
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
    diff = [f"{k}={saved.get(k)} (flags: {want[k]})" for k in want if saved.get(k) != want[k]]
    if diff:
        raise CheckpointError(
            f"{path} does not match the flags: {', '.join(diff)}; use matching flags or another --out-dir"
        )


def sft_train(task, tok, cfg, args, device, log=print):
    """Train a fresh GPT on the task's SFT data; returns (model, info dict)."""
    torch.manual_seed(args.seed)
    model = GPT(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.sft_lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed)
    t0, info = time.time(), {}
    for step in range(1, args.sft_steps + 1):
        x, y = task.sft_batch(g, args.sft_batch_size, tok)
        _, loss = model(x.to(device), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        info = {"sft_steps": step, "sft_loss": loss.item()}
        if task.name == "arithmetic" and step % 25 == 0:
            acc = task.evaluate(model, tok, device, split="train")["eval_acc"]
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
        log(f"no {path}: training the SFT policy ({args.sft_steps} steps at most)")
        model, info = sft_train(task, tok, cfg, args, device, log)
        ck = {
            "model": model.state_dict(),
            "model_config": asdict(cfg),
            "task": task.name,
            "chars": tok.chars,
            "info": info,
        }
        save_checkpoint(ck, path)
        log(f"saved {path}: {info}")
    if dist.is_initialized():
        dist.barrier()
    ck = load_checkpoint(path, map_location=device)
    if ck.get("task") != task.name:
        raise CheckpointError(
            f"{path} is an SFT policy for task {ck.get('task')!r}, not {task.name!r}; use another --out-dir"
        )
    check_model_config(ck["model_config"], cfg, path)
    model = GPT(cfg).to(device)
    model.load_state_dict(ck["model"])
    return model, tok, ck.get("info", {})

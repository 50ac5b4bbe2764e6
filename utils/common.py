"""Device, DDP and error helpers shared by the drivers (nanoGPT / nanochat style)."""

import argparse
import gc
import math
import os
import sys

import torch
import torch.distributed as dist


def fail(msg, code=2):
    """One line on stderr and a non-zero exit: bad input (2, argparse's convention) or a failed run."""
    print(f"{os.path.basename(sys.argv[0])}: error: {msg}", file=sys.stderr)
    sys.exit(code)


def pick_device(name, fallback=False):
    """'auto' | 'cpu' | 'cuda' -> a device string. Asking for CUDA without one is an error, or with
    fallback=True (the GPU examples, which must also run on a laptop) one printed line and the CPU."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        if fallback:
            prog = os.path.basename(sys.argv[0])
            print(f"{prog}: no CUDA device visible to torch, falling back to --device cpu", flush=True)
            return "cpu"
        fail("--device cuda asked for, but torch sees no CUDA device (use --device cpu or auto)")
    return name


def compute_init(device):
    """Start DDP when launched by torchrun (RANK set); returns (ddp, rank, local_rank, world_size, device)."""
    if int(os.environ.get("RANK", -1)) == -1:
        return False, 0, 0, 1, device
    rank, local_rank, world = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return True, rank, local_rank, world, device


def compute_cleanup(ddp):
    """End DDP: wait for every rank, then destroy the process group while the interpreter is whole.
    Drop the DDP wrapper first (its reducer holds the group): a group still alive at interpreter exit
    is torn down in an arbitrary order and gloo's threads could abort the process (SIGABRT,
    "terminate called without an active exception": 1 of 60 torchrun runs of a DDP test here, 0 of 100
    with the wrapper dropped)."""
    if ddp:
        gc.collect()  # the dropped DDP wrapper and its reducer, so the destroy below frees the group
        dist.barrier()  # rank 0 may still be evaluating; leaving early aborts gloo's pending pairs
        dist.destroy_process_group()


def print0(*args, **kwargs):
    if int(os.environ.get("RANK", 0)) == 0:
        print(*args, **kwargs)


def is_finite(x):
    """True when a float or tensor holds no NaN or inf."""
    if torch.is_tensor(x):
        return bool(torch.isfinite(x).all())
    return math.isfinite(x)


def positive(kind=float):
    """argparse type: a number > 0, with a one-line error otherwise."""

    def parse(s):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not a {kind.__name__}") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
        return v

    return parse


def at_least(n):
    """argparse type: an int >= n."""

    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not an int") from None
        if v < n:
            raise argparse.ArgumentTypeError(f"must be >= {n}, got {s}")
        return v

    return parse


def lr_at(step, total, peak, warmup_frac, schedule="cosine"):
    """Learning rate of 1-based `step` of `total`: linear warmup over the first warmup_frac of the steps,
    then cosine decay to peak/10 at the last step (nanoGPT's schedule); schedule="constant" is `peak`."""
    if schedule == "constant":
        return peak
    warmup = max(1, round(warmup_frac * total))
    if step <= warmup:
        return peak * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def fraction(s):
    """argparse type: a float in [0, 1)."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a float") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {s}")
    return v


def memory_stats(device, trainable, frozen=(), optimizers=()):
    """What a method holds, in MiB: parameters (trainable and frozen), gradients, optimizer state, and
    the peak measured (CUDA: torch.cuda.max_memory_allocated; CPU: the process's peak RSS)."""
    mib = 2**20
    nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts)
    params = [p for m in trainable for p in m.parameters()]
    stats = {
        "params_mib": nbytes(params) / mib,
        "frozen_params_mib": nbytes(p for m in frozen for p in m.parameters()) / mib,
        "grads_mib": nbytes(p.grad for p in params if p.grad is not None) / mib,
        "optimizer_mib": nbytes(
            v for o in optimizers for s in o.state.values() for v in s.values() if torch.is_tensor(v)
        )
        / mib,
    }
    if device.startswith("cuda"):
        stats["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / mib
    else:
        import resource

        stats["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {k: round(v, 2) for k, v in stats.items()}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help that says each flag's default once: argparse's "(default: X)" unless the help text already
    names its default in words ("default: the task's rl_steps"), and none for a switch (store_true, off
    unless given) or a None default, whose meaning the text says (tests/test_help.py checks every driver)."""

    def _get_help_string(self, action):
        if "default" in (action.help or "") or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def console(x, digits=3):
    """x rounded to `digits` significant digits for the console, never into its integer part (a dict: each
    float in it): 0.92600000000001 -> 0.926, 1.9824259281 -> 1.98, 0.000123456 -> 0.000123, 1234.56 -> 1235.0.
    The CSV and the JSON summaries keep full precision."""
    if isinstance(x, dict):
        return {k: console(v, digits) for k, v in x.items()}
    if isinstance(x, float) and math.isfinite(x) and x != 0:
        return round(x, max(0, digits - 1 - math.floor(math.log10(abs(x)))))
    return x


def add_run_args(parser, method, torchrun=False, schedule=None, logs=None, run=None, device=None):
    """The flags every RL driver shares (train_grpo.py, train_ppo.py): evaluation, checkpoints, faults,
    seed, device, output. `method` names the checkpoint and the default log: <out-dir>/<method>_ckpt.pt,
    logs/<method>.csv. schedule (--lr-schedule, --warmup-frac), logs (--eval-every, --log, --no-progress),
    run (--out-dir, --ckpt-every, --resume, --max-bad-steps, --seed) and device (--device, --compile) are
    the argument groups of `parser` that show those flags in --help (default: parser itself). The
    fault-injection flags are hidden from --help (argparse.SUPPRESS) and parse all the same."""
    schedule, logs, run, device = (g if g is not None else parser for g in (schedule, logs, run, device))
    schedule.add_argument(
        "--lr-schedule",
        choices=["cosine", "constant"],
        default="cosine",
        help="learning rate over the run: linear warmup then cosine decay to lr/10, or constant",
    )
    schedule.add_argument(
        "--warmup-frac", type=fraction, default=0.05, help="cosine schedule: fraction of the steps with linear warmup"
    )
    run.add_argument(
        "--out-dir",
        default=None,
        help=f"checkpoints: policy.pth (SFT, = pi_ref), {method}_ckpt.pt, rm.pth (default: out/<task>)",
    )
    run.add_argument(
        "--ckpt-every", type=at_least(1), default=50, help=f"write <out-dir>/{method}_ckpt.pt every k steps"
    )
    run.add_argument(
        "--resume", action="store_true", help=f"continue from <out-dir>/{method}_ckpt.pt, appending to --log"
    )
    run.add_argument("--max-bad-steps", type=at_least(1), default=3, help="stop after this many NaN/inf steps in a row")
    run.add_argument("--seed", type=int, default=1337, help="random seed (same seed, same CPU: same numbers)")
    device.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to run")
    device.add_argument("--compile", action="store_true", help="torch.compile the policy's training forward")
    note = " (under torchrun spell it --metrics-csv: torchrun takes --log for its own --log-dir)" if torchrun else ""
    logs.add_argument(
        "--log",
        "--metrics-csv",
        dest="log",
        default=f"logs/{method}.csv",
        help=f"metrics CSV, a _samples.txt file goes beside it{note}",
    )
    logs.add_argument(
        "--eval-every", type=at_least(1), default=25, help="held-out evaluation (and samples) every k steps"
    )
    logs.add_argument("--no-progress", action="store_true", help="print a line per eval instead of a progress bar")
    # fault injection for the tests (tests/test_faults.py): a NaN loss at these steps, at this update of each
    parser.add_argument("--debug-nan-steps", type=int, nargs="*", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--debug-nan-update", type=int, default=0, help=argparse.SUPPRESS)

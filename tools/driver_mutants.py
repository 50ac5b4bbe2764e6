"""Hand-made mutants of the drivers, utils/ and tasks/: plausible bugs planted one at a time, each run against the
tests that should catch it. mutmut (tools/mutation.sh) covers the pure modules; the drivers' bugs live in
code that only subprocess runs reach, which mutmut's in-process trampolines cannot see.

    python tools/driver_mutants.py              # every mutant, about 4 minutes on 2 cores
    python tools/driver_mutants.py -k horizon   # the mutants whose name contains "horizon"

Each mutant replaces one exact piece of text (it must occur once) in a scratch copy of the working tree
and runs its tests there; "killed" means the tests failed. Prints one line per mutant and the kill rate.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, file, text, replacement, tests): the bug, where, and the pytest selection that should catch it
MUTANTS = [
    (
        "logsumexp's gradient dropped (one-hot gradient, as a detached normaliser)",
        "grpo.py",
        "part.exp_().mul_(-g)  # -g * softmax(x): logsumexp's part",
        "part.zero_()  # -g * softmax(x): logsumexp's part",
        ["tests/test_grpo.py", "-k", "per_token_logps"],
    ),
    (
        "delta-capped tokens not in clip_frac",
        "grpo.py",
        "capped = ((ratio > delta) & (A < 0)).float()",
        "capped = torch.zeros_like(ratio)",
        ["tests/test_grpo.py", "-k", "capped_by_delta"],
    ),
    (
        "policy.pth of other characters loads",
        "utils/sft.py",
        'if ck.get("chars") != tok.chars:',
        "if False:",
        ["tests/test_tasks.py", "-k", "horizon"],
    ),
    (
        "horizon: evaluation ignores --max-new-tokens",
        "train_grpo.py",
        "    task.max_new_tokens = args.max_new_tokens\n",
        "    pass\n",
        ["tests/test_tasks.py", "-k", "horizon"],
    ),
    (
        "JSONL name from the basename only",
        "tasks/jsonl.py",
        'self.name = f"jsonl_{os.path.splitext(os.path.basename(path))[0]}_{digest}"',
        'self.name = f"jsonl_{os.path.splitext(os.path.basename(path))[0]}"',
        ["tests/test_tasks.py", "-k", "jsonl_name"],
    ),
    (
        "held-out prompts trained on",
        "tasks/jsonl.py",
        "self.train = [p for p in prompts if p not in held]",
        "self.train = prompts",
        ["tests/test_tasks.py", "-k", "heldout_prompts"],
    ),
    (
        "--data silently ignored by a built-in task",
        "tasks/loader.py",
        "if data and spec not in TASKS_WITH_DATA:",
        "if False:",
        ["tests/test_tasks.py", "-k", "data_is_refused"],
    ),
    (
        "model_config types unchecked",
        "utils/init_from.py",
        "    if wrong:\n",
        "    if False:\n",
        ["tests/test_init_from.py", "-k", "bad_pickles"],
    ),
    (
        "SFT eval taken from the resumed policy",
        "train_grpo.py",
        "sft_eval = evaluate(ref) if master else {}",
        "sft_eval = evaluate(policy) if master else {}",
        ["tests/test_logged_numbers.py"],
    ),
    (
        "entropy bonus counted once per DDP rank (issue 18 item 1)",
        "grpo.py",
        "(world_size * (entropy * mask).sum() / n_global)",
        "((entropy * mask).sum() / n_global)",
        ["tests/test_memory.py", "-k", "ddp_with_bonus"],
    ),
    (
        "micro-batches: grpo's per-completion mean not scaled to the batch",
        "grpo.py",
        "return 1.0 if num_completions is None else mask.size(0) / num_completions",
        "return 1.0",
        ["tests/test_memory.py", "-k", "micro_batches_give and grpo"],
    ),
    (
        "micro-batches: grpo's share over the micro-batch's completions (the driver passes the wrong count)",
        "train_grpo.py",
        "num_completions=seq.size(0),",
        "num_completions=logp.size(0),",
        ["tests/test_memory.py", "-k", "micro_batches_give and grpo"],
    ),
    (
        "micro-batches: bnpo's token mean not scaled to the rank's tokens",
        "grpo.py",
        "return 1.0 if rank_tokens is None else mask.sum() / torch.as_tensor(rank_tokens).clamp(min=1)",
        "return 1.0",
        ["tests/test_memory.py", "-k", "micro_batches_give and bnpo"],
    ),
    (
        "DDP: dapo's sum / global count not multiplied by the world size",
        "grpo.py",
        'return world_size  # "dapo", "cispo"',
        'return 1  # "dapo", "cispo"',
        ["tests/test_memory.py", "-k", "ddp_with_bonus and dapo-micro"],
    ),
    (
        "DDP: the token count not all-reduced (dapo divides by the rank's count)",
        "train_grpo.py",
        "dist.all_reduce(num_tokens)  # the global count",
        "pass  # the global count",
        ["tests/test_memory.py", "-k", "ddp_with_bonus and dapo-micro"],
    ),
    (
        "environment tokens trained on",
        "train_grpo.py",
        "mask = mask * (1 - env_mask)  # (n*G, T)",
        "mask = mask  # (n*G, T)",
        ["tests/test_tools.py", "-k", "driver_gradient"],
    ),
    (
        "SFT trains on the tool's replies",
        "tasks/rollout.py",
        "            y[i, P + k - 1] = -1",
        "            pass",
        ["tests/test_tools.py", "-k", "sft_never"],
    ),
    (
        "all-equal groups kept by dynamic sampling",
        "train_grpo.py",
        "keep = (r.view(B, G).std(dim=1) > 0).nonzero().flatten().tolist()",
        "keep = list(range(B))",
        ["tests/test_train_grpo.py", "tests/test_logged_numbers.py"],
    ),
    (
        "kept_groups = B",
        "train_grpo.py",
        '"kept_groups": int((r_global.view(-1, G).std(dim=1) > 0).sum()),',
        '"kept_groups": B,',
        ["tests/test_train_grpo.py", "tests/test_logged_numbers.py"],
    ),
]


def tracked_copy(dst):
    """The working tree's tracked and untracked-but-not-ignored files, copied to dst."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for f in filter(None, files):
        src = os.path.join(ROOT, f)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dst, f)), exist_ok=True)
            shutil.copy2(src, os.path.join(dst, f))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-k", default="", help="only the mutants whose name contains this")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if args.k in m[0]]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    killed = 0
    with tempfile.TemporaryDirectory() as tmp:
        tracked_copy(tmp)
        for name, path, old, new, tests in chosen:
            full = os.path.join(tmp, path)
            with open(full) as f:
                source = f.read()
            if source.count(old) != 1:
                sys.exit(f"mutant {name!r}: the text to replace occurs {source.count(old)} times in {path}, not once")
            with open(full, "w") as f:
                f.write(source.replace(old, new))
            t0 = time.time()
            p = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                cwd=tmp,
                capture_output=True,
                text=True,
                env=env,
            )
            with open(full, "w") as f:
                f.write(source)
            status = "killed" if p.returncode != 0 else "SURVIVED"
            killed += p.returncode != 0
            print(f"{status:8} {time.time() - t0:5.0f}s  {name}  ({path}; {' '.join(tests)})", flush=True)
    print(f"{killed} of {len(chosen)} mutants killed")
    return 0 if killed == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())

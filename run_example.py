"""
The main job: the whole nanoGRPO pipeline in one command, each step a real run of a script you can
also run by hand (every command is printed before it runs).

    python run_example.py                      # shortened runs, three parts at once -> logs/ (times: docs/results.md)
    python run_example.py --tiny               # a smoke run of every step in well under a minute (tests)
    python run_example.py --full --seeds 3 --logs results   # regenerate the committed results (about 47 minutes)

Your runs write to logs/ (not tracked by git) and their checkpoints to out/ (also ignored); results/ holds
the committed --full --seeds 3 results that the docs' figures and tables show, and only an explicit
--logs results writes there. At the end the job prints where its results are and how they compare with
the committed ones.

Steps:
  1. arithmetic: SFT (if out/arithmetic/policy.pth is missing) -> GRPO           (train_grpo.py)
  2. arithmetic: PPO from the same SFT policy, same prompts and samples per step (train_ppo.py)
  3. the four comparison plots of the original, GRPO vs PPO, mean and band over --seeds (plot.py):
     <logs>/reward_comparison.png, kl_comparison.png, entropy_comparison.png, loss_comparison.png,
     and accuracy_comparison.png, accuracy_vs_time_comparison.png (held-out accuracy per step and per second)
  4. shakespeare RLHF: SFT -> preference pairs -> reward model (simple_example.py, reward_model.py),
     then GRPO against the reward model at each --betas (train_grpo.py --task shakespeare), with
     --full also PPO against it, and the overoptimisation figures: gold and proxy score against KL to
     the reference (<logs>/overopt_gold_vs_kl.png, overopt_proxy_vs_kl.png)
  5. chain ("thinking pays"): SFT on a mix of direct and a few worked solutions -> GRPO, --seeds of them
     (train_grpo.py --task chain); <logs>/chain_acc_len.png: held-out accuracy, completion length and
     share of worked solutions per step, rising together
  6. <logs>/results.md: a table per method (reward, accuracy, KL, wall time, samples, memory)
  7. <logs>/grpo_vs_ppo.html, chain.html, rlhf.html: the runs' rollouts token by token, offline pages
     (view.py, docs/viewer.md); not with --logs results

The default run is the same pipeline made shorter, to show every effect in about 5 minutes on 2 idle cores:
- the three independent parts (arithmetic 1-2, shakespeare 4, chain 5) run at once (--jobs 3), each
  script with OMP_NUM_THREADS=1 (unless you set it) and its output in <logs>/output/<step>.txt, so the
  parts share the cores instead of waiting for each other;
- 120 RL steps on arithmetic instead of 1200, 40 GRPO steps against the reward model at one beta
  instead of 100 at three, and 40 GRPO steps on the chain task instead of 300;
- the shakespeare and chain parts start from committed SFT policies, data/shakespeare_sft_policy.pth and
  data/chain_sft_policy.pth (1500 SFT steps each, the --full recipe): training them takes longer than
  the RL that is the lesson, and a shorter SFT writes fewer lexicon words (a weaker reward model) or too
  few right worked solutions for GRPO to find. --shakespeare-sft-steps N and --chain-sft-steps N train
  them here instead.
--full uses every script's own defaults, the betas 0, 0.04 and 0.1 and one part at a time (--jobs 1, the
threads as you set them, as the committed results were made). Checkpoints go to --out-dir; an SFT
policy or reward model already there is reused.
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from plot import plot_curves
from tasks import TASKS
from utils.common import HelpFormatter
from utils.metrics import read_csv
from view import write_page

ROOT = os.path.dirname(os.path.abspath(__file__))
ARITH_STEPS = 120  # the default (shortened) arithmetic runs; --full: the task's 1200
RLHF_STEPS = 40  # the default (shortened) GRPO run against the reward model; --full: 100
CHAIN_SFT_STEPS, CHAIN_STEPS = 1500, 40  # the default (shortened) chain run; --full: 1500 and the task's 300
COMMITTED = os.path.join(ROOT, "results")  # the committed --full --seeds 3 results the docs show
CHAIN_POLICY = os.path.join(ROOT, "data", "chain_sft_policy.pth")  # committed: 1500 SFT steps (docs/results.md)
SHAKE_POLICY = os.path.join(ROOT, "data", "shakespeare_sft_policy.pth")  # committed: 1500 SFT steps, likewise


class StepFailed(Exception):
    def __init__(self, message, returncode=1):
        super().__init__(message)
        self.returncode = returncode


class Runner:
    """Runs the scripts: one at a time with their output on the terminal (jobs 1), or several at once,
    each script's output in <logs>/output/<name>.txt and one line here when it starts and ends."""

    def __init__(self, jobs, logs):
        self.jobs, self.out = jobs, os.path.join(logs, "output")
        self.env = dict(os.environ)
        if jobs > 1:  # processes, not threads, share the cores: 2 spinning OpenMP threads per process would fight
            self.env.setdefault("OMP_NUM_THREADS", "1")
            os.makedirs(self.out, exist_ok=True)
        self.live, self.lock, self.stopping = set(), threading.Lock(), False

    def sh(self, name, *cmd):
        """Run one script as a subprocess, echoing the command; raise StepFailed if it fails."""
        cmd = [str(c) for c in cmd]
        line = " ".join(shlex.quote(c) for c in ["python", *cmd])
        t0 = time.time()
        if self.jobs == 1:
            print("\n$ " + line, flush=True)
            rc = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=self.env).returncode
            out = None
        else:
            out = os.path.join(self.out, f"{name}.txt")
            print(f"$ {line}\n    [{name}] started, output in {out}", flush=True)
            with open(out, "w") as f:
                with self.lock:
                    if self.stopping:
                        raise StepFailed(f"{name}: not started, another step failed")
                    p = subprocess.Popen([sys.executable, *cmd], cwd=ROOT, env=self.env, stdout=f, stderr=f)
                    self.live.add(p)
                _, status, usage = os.wait4(p.pid, 0)  # p.wait(), plus the CPU time the step used
                p.returncode = rc = os.waitstatus_to_exitcode(status)
                with self.lock:
                    self.live.discard(p)
        wall = time.time() - t0
        if rc != 0:
            tail = "" if out is None else "".join(open(out).readlines()[-15:])
            raise StepFailed(f"step {name} failed with exit code {rc}: {line}\n{tail}".rstrip(), rc)
        if self.jobs > 1:  # CPU below wall: the step waited for a core (other steps, other programs)
            cpu = usage.ru_utime + usage.ru_stime
            print(f"    [{name}] done in {wall:.0f} s ({cpu:.0f} s of CPU)", flush=True)
        return wall

    def run_parts(self, parts):
        """Run the parts (functions calling sh), up to jobs at once; stop everything at the first failure."""
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            futures = [pool.submit(part) for part in parts]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f.exception() for f in done if f.exception() is not None]
            if failed:
                with self.lock:
                    self.stopping = True
                    for p in self.live:
                        p.terminate()
                wait(futures)
                e = failed[0]
                if not isinstance(e, StepFailed):
                    raise e
                print(f"run_example.py: error: {e}", file=sys.stderr)
                sys.exit(e.returncode)


def copy_policy(src, out):
    """Start <out>/policy.pth from a committed SFT policy (docs/results.md), unless one is already there."""
    dst = os.path.join(out, "policy.pth")
    if not os.path.exists(dst):
        os.makedirs(out, exist_ok=True)
        shutil.copy(src, dst)
        print(f"    {dst} is a copy of the committed {os.path.relpath(src, ROOT)}", flush=True)


def values(cols, name):
    return [v for v in cols.get(name, []) if v is not None]


def head_mean(cols, name, k=10):
    """Mean of the first k values of a noisy per-step column (the SFT policy's samples, about)."""
    vals = values(cols, name)[:k]
    return sum(vals) / len(vals) if vals else float("nan")


def tail_mean(cols, name, k=20):
    """Mean of the last k values of a noisy per-step column."""
    vals = values(cols, name)[-k:]
    return sum(vals) / len(vals) if vals else float("nan")


def mean(xs):
    return sum(xs) / len(xs)


def read_summary(out, method):
    with open(os.path.join(out, f"{method}_summary.json")) as f:
        return json.load(f)


def state_mib(memory):
    """Parameters (trainable and the frozen reference) + gradients + optimizer state a method holds (value model included for PPO)."""
    keys = ("params_mib", "frozen_params_mib", "grads_mib", "optimizer_mib")
    return sum(v for k, v in memory.items() if k.removeprefix("value_") in keys)


def main():
    parser = argparse.ArgumentParser(
        description="SFT -> reward model -> GRPO -> PPO, plots and a results table, in one command.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds per method for the GRPO-vs-PPO comparison")
    parser.add_argument("--full", action="store_true", help="full-length runs (the committed results), not shortened")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"RL steps per arithmetic run (default {ARITH_STEPS}, --full the task's 1200)",
    )
    parser.add_argument(
        "--shakespeare-steps",
        type=int,
        default=None,
        help=f"RL steps against the reward model (default {RLHF_STEPS}, --full 100)",
    )
    parser.add_argument(
        "--shakespeare-sft-steps",
        type=int,
        default=None,
        help="SFT steps of the shakespeare policy (default: the committed 1500-step policy, --full 1500)",
    )
    parser.add_argument(
        "--betas",
        type=float,
        nargs="+",
        default=None,
        help="KL strengths of the RLHF runs (default 0.04, --full 0 0.04 0.1)",
    )
    parser.add_argument("--data", default=None, help="the shakespeare text file (default data/tinyshakespeare.txt)")
    parser.add_argument("--out-dir", default="out", help="checkpoints, one folder per task")
    parser.add_argument(
        "--logs", default="logs", help="where the CSVs, plots and results.md go ('results': the committed ones)"
    )
    parser.add_argument(
        "--chain-steps",
        type=int,
        default=None,
        help=f"GRPO steps on the chain task (default {CHAIN_STEPS}, --full the task's 300)",
    )
    parser.add_argument(
        "--chain-sft-steps",
        type=int,
        default=None,
        help="SFT steps of the chain policy (default: the committed 1500-step policy, --full 1500)",
    )
    parser.add_argument("--skip-chain", action="store_true", help="no chain run")
    parser.add_argument("--skip-rlhf", action="store_true", help="only the arithmetic GRPO-vs-PPO part")
    parser.add_argument("--skip-ppo", action="store_true", help="no PPO runs (GRPO and RLHF only)")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke version of every step (tests)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="parts (arithmetic, shakespeare, chain) run at once, each script with OMP_NUM_THREADS=1 unless set "
        "(default 3, --full 1)",
    )
    args = parser.parse_args()
    for name in (
        "seeds",
        "steps",
        "shakespeare_steps",
        "shakespeare_sft_steps",
        "chain_steps",
        "chain_sft_steps",
        "jobs",
    ):
        v = getattr(args, name)
        if v is not None and v < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    overrides = [args.tiny, args.steps, args.shakespeare_steps, args.shakespeare_sft_steps, args.betas]
    overrides += [args.skip_rlhf, args.skip_ppo, args.data, args.chain_steps, args.chain_sft_steps, args.skip_chain]
    if os.path.realpath(args.logs) == os.path.realpath(COMMITTED) and (
        not (args.full and args.seeds == 3) or any(overrides) or (args.jobs or 1) != 1
    ):
        parser.error(
            "--logs results holds the committed results of exactly `--full --seeds 3`; write other runs elsewhere"
        )
    if args.betas and any(b < 0 for b in args.betas):
        parser.error(f"--betas must be >= 0, got {args.betas}")
    steps = args.steps or (3 if args.tiny else TASKS["arithmetic"].rl_steps if args.full else ARITH_STEPS)
    rlhf_steps = args.shakespeare_steps or (3 if args.tiny else 100 if args.full else RLHF_STEPS)
    rlhf_sft_steps = args.shakespeare_sft_steps or 1500
    # the short run starts the shakespeare and chain parts from committed SFT policies (the --full recipe's)
    committed = not (args.full or args.tiny)
    betas = args.betas or ([0.0, 0.04, 0.1] if args.full else [0.04])
    t_start = time.time()
    L = args.logs
    os.makedirs(L, exist_ok=True)
    runner = Runner(args.jobs or (1 if args.full else 3), L)
    sh = runner.sh
    tiny = ["--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--batch-size", 4, "--group-size", 4] if args.tiny else []
    every = 2 if args.tiny else 25
    common = ["--no-progress", "--eval-every", every, *tiny]
    smooth = 1 if args.tiny else 10

    # --- 1-2. arithmetic: GRPO and PPO from the same SFT policy
    arith = os.path.join(args.out_dir, "arithmetic")
    methods = ["grpo"] if args.skip_ppo else ["grpo", "ppo"]
    runs = {m: [] for m in methods}
    sft = ["--sft-steps", 50] if args.tiny else []

    def arithmetic():
        for seed in range(1, args.seeds + 1):
            for m in methods:
                name = m if args.seeds == 1 else f"{m}_seed{seed}"
                log = os.path.join(L, f"{name}.csv")
                out = arith if seed == 1 else os.path.join(arith, f"seed{seed}")
                if seed > 1 and not os.path.exists(os.path.join(out, "policy.pth")):
                    os.makedirs(
                        out, exist_ok=True
                    )  # the same SFT policy for every seed: only the RL randomness changes
                    shutil.copy(os.path.join(arith, "policy.pth"), os.path.join(out, "policy.pth"))
                cmd = [f"train_{m}.py", "--task", "arithmetic", "--seed", seed, "--steps", steps, "--out-dir", out]
                wall = sh(f"arithmetic_{name}", *cmd, "--log", log, *common, *sft)
                runs[m].append({"log": log, "wall": wall, "summary": read_summary(out, m)})

    # --- 4. shakespeare RLHF against a learned reward model (its figures are drawn in step 3)
    rlhf = []  # one entry per run against the reward model

    def shakespeare():
        shake = os.path.join(args.out_dir, "shakespeare")
        pairs = os.path.join(shake, "prefs.jsonl")
        model = ["--n-layer", 1, "--n-head", 2, "--n-embd", 32] if args.tiny else []
        model += ["--data", args.data] if args.data else []
        if args.tiny:
            small = [
                "--n-pairs",
                40,
                "--max-prompts",
                64,
                "--samples-per-prompt",
                4,
                "--sft-steps",
                30,
                "--sft-lr",
                3e-3,
            ]
        else:
            small = ["--sft-steps", rlhf_sft_steps]
        rm_steps = ["--rm-steps", 5, "--rm-ckpt-every", 5] if args.tiny else []
        if not os.path.exists(os.path.join(shake, "rm.pth")):
            if committed and not (args.shakespeare_sft_steps or args.data):
                copy_policy(SHAKE_POLICY, shake)
            sh("shakespeare_pairs", "simple_example.py", "--out-dir", shake, "--pairs", pairs, *model, *small)
            sh(
                "shakespeare_rm",
                "reward_model.py",
                "--out-dir",
                shake,
                "--pairs",
                pairs,
                "--log",
                os.path.join(L, "rm.csv"),
                *model,
                *small,
                *rm_steps,
            )
        shake_common = ["--task", "shakespeare", "--out-dir", shake, "--steps", rlhf_steps, *common]
        shake_common += ["--data", args.data] if args.data else []
        for beta in betas:
            log = os.path.join(L, f"rlhf_grpo_beta{beta:g}.csv")
            wall = sh(f"shakespeare_grpo_beta{beta:g}", "train_grpo.py", "--beta", beta, "--log", log, *shake_common)
            rlhf.append(
                {"label": f"GRPO beta={beta:g}", "log": log, "wall": wall, "summary": read_summary(shake, "grpo")}
            )
        if args.full and not args.skip_ppo:
            log = os.path.join(L, "rlhf_ppo.csv")
            wall = sh("shakespeare_ppo", "train_ppo.py", "--log", log, *shake_common)
            rlhf.append({"label": "PPO kl_coef=0.05", "log": log, "wall": wall, "summary": read_summary(shake, "ppo")})

    # --- 5. chain: thinking pays
    chain = []
    chain_steps = args.chain_steps or (2 if args.tiny else TASKS["chain"].rl_steps if args.full else CHAIN_STEPS)
    chain_sft = args.chain_sft_steps or (20 if args.tiny else 1500 if args.full else CHAIN_SFT_STEPS)
    # the short run starts from the committed SFT policy (the --full recipe), unless told to train one
    committed_sft = committed and not args.chain_sft_steps

    def chain_runs():
        for seed in range(1, args.seeds + 1):
            out = os.path.join(args.out_dir, "chain" if args.seeds == 1 else f"chain_seed{seed}")
            log = os.path.join(L, "chain.csv" if args.seeds == 1 else f"chain_seed{seed}.csv")
            if committed_sft:
                copy_policy(CHAIN_POLICY, out)
            cmd = ["train_grpo.py", "--task", "chain", "--seed", seed, "--steps", chain_steps, "--out-dir", out]
            cmd += [] if committed_sft else ["--sft-steps", chain_sft]
            cmd += ["--log", log, "--eval-every", 2 if args.tiny else 10, "--no-progress"]
            wall = sh(f"chain_seed{seed}", *cmd, *tiny)
            chain.append({"log": log, "wall": wall, "summary": read_summary(out, "grpo")})

    parts = [shakespeare] * (not args.skip_rlhf) + [arithmetic] + [chain_runs] * (not args.skip_chain)  # longest first
    if runner.jobs > 1:
        print(f"Running {len(parts)} parts at once ({runner.jobs} at most), each script with OMP_NUM_THREADS="
              f"{runner.env['OMP_NUM_THREADS']}; each step's output goes to {runner.out}/.")  # fmt: skip
    runner.run_parts(parts)

    # --- 3. the plots: GRPO vs PPO on arithmetic, overoptimisation, chain
    csvs = [r["log"] for m in methods for r in runs[m]]
    for metric, fname in [
        ("mean_r", "reward"),
        ("kl", "kl"),
        ("entropy", "entropy"),
        ("loss", "loss"),
        ("eval_acc", "accuracy"),
    ]:
        title = f"arithmetic: {metric}, GRPO vs PPO ({args.seeds} seed{'s' if args.seeds > 1 else ''})"
        plot_curves(
            csvs,
            metric,
            os.path.join(L, f"{fname}_comparison.png"),
            smooth_n=1 if metric == "eval_acc" else smooth,
            title=title,
        )

    title = "arithmetic: held-out accuracy vs wall time, GRPO vs PPO"
    plot_curves(csvs, "eval_acc", os.path.join(L, "accuracy_vs_time_comparison.png"), x="time_s", title=title)
    if rlhf:
        logs = [r["log"] for r in rlhf]
        labels = [r["label"] for r in rlhf]
        for metric, x, fname, title in [
            ("gold_r", "kl", "overopt_gold_vs_kl", "gold score (the rule) vs KL to the reference"),
            ("mean_r", "kl", "overopt_proxy_vs_kl", "reward-model score (optimised) vs KL to the reference"),
            ("gold_r", "step", "overopt_gold_vs_step", "gold score (the rule) per step"),
        ]:
            out = os.path.join(L, f"{fname}.png")
            plot_curves(logs, metric, out, smooth_n=smooth, x=x, labels=labels, title=f"shakespeare: {title}")
    if chain:
        logs = [c["log"] for c in chain]
        title = f"chain: held-out greedy accuracy, length and worked share ({len(logs)} seed{'s' * (len(logs) > 1)})"
        plot_curves(
            logs, ["eval_acc", "eval_len", "eval_think_frac"], os.path.join(L, "chain_acc_len.png"), title=title
        )

    # --- the viewer pages: the runs' rollouts token by token, GRPO beside PPO (view.py, docs/viewer.md)
    pages = []
    if os.path.realpath(L) != os.path.realpath(COMMITTED):  # results/ holds only what docs/results.md names
        pages.append(write_page([runs[m][0]["log"] for m in methods], os.path.join(L, "grpo_vs_ppo.html")))
        if chain:
            pages.append(write_page([chain[0]["log"]], os.path.join(L, "chain.html")))
        if rlhf:
            pages.append(write_page([rlhf[0]["log"]], os.path.join(L, "rlhf.html")))

    # --- 6. results table
    device = runs[methods[0]][0]["summary"]["device"]
    cmd = " ".join(["python run_example.py", *sys.argv[1:]])
    lines = [f"Measured by `{cmd}` on {device}; {args.seeds} seed(s) per method, mean over seeds.", ""]
    lines += [
        "Arithmetic (verifiable rewards), GRPO vs PPO from the same SFT policy, the same prompts and B*G samples per step:",
        "",
    ]
    head = "| method | held-out acc (SFT -> final) | reward, last 20 steps | KL, last 20 steps | wall time (s) | samples seen | params+grads+optimizer (MiB) | peak RSS / CUDA (MiB) |"
    lines += [head, "|---|---|---|---|---|---|---|---|"]
    for m in methods:
        rs = runs[m]
        cols = [read_csv(r["log"]) for r in rs]
        s0 = rs[0]["summary"]
        mem = s0.get("memory", {})
        held = mean([r["summary"]["final_eval"]["eval_acc"] for r in rs])
        peak = max(
            r["summary"]["memory"].get("peak_cuda_mib", r["summary"]["memory"].get("peak_rss_mib", 0)) for r in rs
        )
        lines.append(
            f"| {m.upper()} | {s0['sft_eval']['eval_acc']:.3f} -> {held:.3f} | {mean([tail_mean(c, 'mean_r') for c in cols]):.3f} | "
            f"{mean([tail_mean(c, 'kl') for c in cols]):.3f} | {mean([r['wall'] for r in rs]):.0f} | {s0['samples_seen']} | {state_mib(mem):.2f} | {peak:.0f} |"
        )
    if not args.skip_rlhf:
        lines += [
            "",
            "Shakespeare RLHF against the learned reward model: proxy = its score (optimised), gold = the lexicon rule.",
            "First 10 steps (about the SFT policy's samples) -> last 10 steps; peak gold = best 10-step mean:",
            "",
        ]
        lines += [
            "| run | proxy (RM) score | gold score | peak gold | KL, last 10 | held-out gold (SFT -> final) | wall time (s) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rlhf:
            c, s = read_csv(r["log"]), r["summary"]
            gold = values(c, "gold_r")
            peak = max(mean(gold[i : i + 10]) for i in range(max(1, len(gold) - 9)))
            lines.append(
                f"| {r['label']} | {head_mean(c, 'mean_r'):.3f} -> {tail_mean(c, 'mean_r', 10):.3f} | {head_mean(c, 'gold_r'):.3f} -> {tail_mean(c, 'gold_r', 10):.3f} | "
                f"{peak:.3f} | {tail_mean(c, 'kl', 10):.3f} | {s['sft_eval']['eval_r']:.3f} -> {s['final_eval']['eval_r']:.3f} | {r['wall']:.0f} |"
            )
    if chain:
        lines += [
            "",
            "Chain (thinking pays): held-out greedy accuracy, mean completion length (tokens) and share of worked",
            "solutions, the SFT policy (step 0) -> the last evaluation; accuracy of each format at the end",
            "(n/a: no completion of that format):",
            "",
            "| seed | accuracy | length | worked share | worked acc | direct acc | wall time (s) |",
            "|---|---|---|---|---|---|---|",
        ]
        for i, c in enumerate(chain, 1):
            a, b = c["summary"]["sft_eval"], c["summary"]["final_eval"]
            lines.append(
                f"| {i} | {a['eval_acc']:.3f} -> {b['eval_acc']:.3f} | {a['eval_len']:.1f} -> {b['eval_len']:.1f} | "
                f"{a['eval_think_frac']:.3f} -> {b['eval_think_frac']:.3f} | {share(b['eval_acc_think'])} | "
                f"{share(b['eval_acc_direct'])} | {c['wall']:.0f} |"
            )
    lines += ["", f"Total wall time {time.time() - t_start:.0f} s (including SFT, pairs and reward-model training)."]
    with open(os.path.join(L, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    if os.path.realpath(L) != os.path.realpath(COMMITTED):
        compare_with_committed(L, runs, rlhf, steps, chain)
    if pages:
        print("\nThe rollouts token by token (open in a browser, offline): " + ", ".join(pages))


def share(x):
    """A per-format accuracy, n/a when no completion had that format (nan)."""
    return "n/a" if x != x else f"{x:.3f}"


def final_acc(cols):
    """The last held-out accuracy of a run's CSV."""
    return values(cols, "eval_acc")[-1]


def compare_with_committed(L, runs, rlhf, steps, chain=()):
    """Where this run's results are, and the committed results (results/, --full --seeds 3) beside them."""
    print(f"\nYour results: {os.path.join(L, 'results.md')}, the CSVs and plots in {L}/.")
    print(f"Committed results (python run_example.py --full --seeds 3 --logs results): {COMMITTED}/results.md")
    print("The full runs: python run_example.py --full (about 47 minutes on 2 cores with --seeds 3); what each")
    print("committed file in results/ is and the command that wrote it: docs/results.md.")
    lines = []
    for m, rs in runs.items():
        committed = [os.path.join(COMMITTED, f"{m}_seed{s}.csv") for s in (1, 2, 3)]
        if not all(os.path.exists(c) for c in committed) or not rs:
            continue
        mine = mean([final_acc(read_csv(r["log"])) for r in rs])
        theirs = [final_acc(read_csv(c)) for c in committed]
        n_steps = int(read_csv(committed[0])["step"][-1])
        lines.append(
            f"  arithmetic {m.upper()}: held-out accuracy {mine:.3f} after {steps} steps (yours, {len(rs)} seed(s)); "
            f"committed {mean(theirs):.3f} after {n_steps} steps (3 seeds: {', '.join(f'{t:.3f}' for t in theirs)})"
        )
    for r in rlhf:
        committed = os.path.join(COMMITTED, os.path.basename(r["log"]))
        if os.path.exists(committed):
            mine, theirs = read_csv(r["log"]), read_csv(committed)
            lines.append(
                f"  shakespeare {r['label']}: gold score, last 10 steps {tail_mean(mine, 'gold_r', 10):.3f} after "
                f"{int(mine['step'][-1])} steps (yours); committed {tail_mean(theirs, 'gold_r', 10):.3f} after "
                f"{int(theirs['step'][-1])} steps"
            )
    committed = [os.path.join(COMMITTED, f"chain_seed{s}.csv") for s in (1, 2, 3)]
    if chain and all(os.path.exists(c) for c in committed):
        mine = [read_csv(c["log"]) for c in chain]
        theirs = [read_csv(c) for c in committed]
        last = lambda cols, k: values(cols, k)[-1]  # noqa: E731
        lines.append(
            f"  chain: held-out accuracy {mean([last(c, 'eval_acc') for c in mine]):.3f}, length "
            f"{mean([last(c, 'eval_len') for c in mine]):.1f} after {int(mine[0]['step'][-1])} steps (yours); committed "
            f"{mean([last(c, 'eval_acc') for c in theirs]):.3f}, length {mean([last(c, 'eval_len') for c in theirs]):.1f} "
            f"after {int(theirs[0]['step'][-1])} steps (3 seeds)"
        )
    if lines:
        print("How they compare (the default run is shorter than the committed --full one):")
        print("\n".join(lines))


if __name__ == "__main__":
    main()

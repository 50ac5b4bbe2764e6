"""
A learned reward model: the GPT body of model.py with a scalar head, fit to pairwise preferences with the
Bradley-Terry loss (Christiano et al. 2017, "Deep RL from human preferences"; Ouyang et al. 2022,
InstructGPT, section 3.5 and eq. 1):

    loss = -log sigmoid(r(chosen) - r(rejected))

    python simple_example.py                                   # data/prefs.jsonl (pairs from the SFT policy)
    python reward_model.py --pairs data/prefs.jsonl            # -> out/shakespeare/rm.pth, logs/rm.csv
    python reward_model.py --resume                            # continue from out/shakespeare/rm_ckpt.pt

What it is, and how it departs from InstructGPT:
  1. r(text) = w . h_last + b, where h_last is the final hidden state (after ln_f) at the last real token;
     inputs are right-padded, and with causal attention the pads after the last real token cannot change
     its hidden state, so a score does not depend on how much padding shares its batch.
  2. The reward model reads the completion only, not prompt + completion: the gold rule it learns
     (tasks/shakespeare.py gold_score) is a function of the completion alone, so the prompt would only add tokens
     and a boundary the model would have to learn to find. A prompt-dependent rule would need both.
  3. It starts from the SFT policy's weights (InstructGPT: "starting from the SFT model with the final
     unembedding layer removed"), so it has the same shape as the policy (--n-layer/--n-head/--n-embd);
     the scalar head starts at zero, so the first loss is exactly log 2. --init scratch starts from random
     weights instead.
  4. One pair per comparison (InstructGPT batches all K-choose-2 pairs of a ranking), no score
     normalisation: GRPO standardises rewards within each group, so an offset of r does not matter.
The pairs are split once into train and held-out by a fixed permutation (seed 1234, independent of --seed).
If --pairs is missing it is generated first (simple_example.py, from <out-dir>/policy.pth).

Metrics (the CSV at --log; each one defined here):
  step           optimizer step, 1-based
  loss           Bradley-Terry loss on the step's batch of training pairs
  acc            fraction of the batch where r(chosen) > r(rejected) (agreement with the noisy labels)
  grad_norm      total gradient 2-norm before clipping
  val_loss       Bradley-Terry loss on all held-out pairs (empty on steps without evaluation)
  val_acc        held-out fraction with r(chosen) > r(rejected): accuracy against the labels
  val_gold_acc   held-out accuracy against the noiseless rule: sign(r(a) - r(b)) == sign(g(a) - g(b)),
                 over the held-out pairs where g(a) != g(b) (the rule has a preference)
  time_s         wall-clock seconds since training started
  skipped        1 if the step was skipped because the loss or gradient was NaN or inf
"""

import argparse
import json
import math
import os
import time
from dataclasses import asdict

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from model import END, GPT, CharTokenizer, GPTConfig
from simple_example import DEFAULT_PAIRS, add_data_args, generate_data
from tasks.shakespeare import ShakespeareTask, gold_score, lexicon_reward
from utils.ckpt import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from utils.common import HelpFormatter, at_least, fail, is_finite, pick_device, positive
from utils.metrics import CSVLogger
from utils.sft import add_model_args, check_model_config, load_or_train_sft, model_config

COLUMNS = ["step", "loss", "acc", "grad_norm", "val_loss", "val_acc", "val_gold_acc", "time_s", "skipped"]

# -----------------------------------------------------------------------------
# the model and the loss


class RewardModel(nn.Module):
    """GPT body + scalar head read at the last real token of each right-padded row."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.gpt = GPT(config)  # its lm_head is never used: the body's hidden states go to the scalar head
        self.head = nn.Linear(config.n_embd, 1)
        nn.init.zeros_(self.head.weight)  # r = 0 for every text at the start: the first loss is log 2
        nn.init.zeros_(self.head.bias)

    def forward(self, idx, lengths):
        """idx: (N, T) long, right-padded; lengths: (N,) real tokens per row (>= 1). Returns r: (N,) float."""
        h, _ = self.gpt.body(idx)  # (N, T, C)
        last = h[torch.arange(idx.size(0), device=idx.device), lengths - 1]  # (N, C) the last real token
        return self.head(last).squeeze(-1)  # (N,)


def bt_loss(r_chosen, r_rejected):
    """Bradley-Terry loss, mean over pairs: -log sigmoid(r_chosen - r_rejected). Shapes (N,), (N,).

    logsigmoid is computed stably (no log(0) when the margin is very negative). Returns (loss, stats);
    stats (detached): acc = fraction with r_chosen > r_rejected, margin = mean r_chosen - r_rejected.
    """
    margin = r_chosen - r_rejected  # (N,)
    loss = -F.logsigmoid(margin).mean()
    stats = {"acc": (margin > 0).float().mean().detach(), "margin": margin.mean().detach()}
    return loss, stats


def encode_texts(texts, tok, device, block_size):
    """Texts -> (idx (N, T) right-padded with the end token, lengths (N,)). The end character "|" maps to
    the end token, so a completion that sampled it is scored as sampled. Raises ValueError on an empty
    text, a text longer than block_size, or a character outside the vocabulary."""
    rows = []
    for t in texts:
        if not t or len(t) >= block_size:
            raise ValueError(f"cannot score a text of length {len(t)} (1..{block_size - 1}): {t!r}")
        bad = sorted({c for c in t if c != END and c not in tok.stoi})
        if bad:
            raise ValueError(f"characters outside the vocabulary {bad} in {t!r}")
        rows.append([tok.eos_id if c == END else tok.stoi[c] for c in t] + [tok.eos_id])
    T = max(len(r) for r in rows)
    idx = torch.full((len(rows), T), tok.eos_id, dtype=torch.long)  # pads are never read (see RewardModel)
    for i, r in enumerate(rows):
        idx[i, : len(r)] = torch.tensor(r)
    lengths = torch.tensor([len(r) for r in rows])
    return idx.to(device), lengths.to(device)


@torch.no_grad()
def score(rm, tok, texts, device, batch_size=512):
    """RM scores of texts, a list of floats (eval mode, no grad, in batches)."""
    was_training = rm.training
    rm.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        idx, lengths = encode_texts(texts[i : i + batch_size], tok, device, rm.config.block_size)
        out += rm(idx, lengths).float().tolist()
    rm.train(was_training)
    return out


# -----------------------------------------------------------------------------
# data


def read_comparisons(path):
    """The preference file (simple_example.py's format) as a list of groups {"prompt", "completions",
    "comparisons"}. Raises ValueError (one line) on a missing file, a line that is not JSON or not a
    group, an index out of range, or fewer than 2 groups (one to train, one held out)."""
    if not os.path.exists(path):
        raise ValueError(f"preference file {path} not found (make it with simple_example.py)")
    groups = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                x = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path} line {n} is not JSON") from None
            comps = x.get("completions") if isinstance(x, dict) else None
            cmps = x.get("comparisons") if isinstance(x, dict) else None
            if not (isinstance(comps, list) and comps and all(isinstance(t, str) for t in comps)):
                raise ValueError(f"{path} line {n} needs 'completions', a list of strings")
            K = len(comps)
            ok = isinstance(cmps, list) and cmps
            ok = ok and all(
                isinstance(c, list) and len(c) == 2 and all(type(i) is int and 0 <= i < K for i in c) for c in cmps
            )
            if not ok:
                raise ValueError(f"{path} line {n} needs 'comparisons', a list of [chosen, rejected] indices < {K}")
            groups.append({"prompt": x.get("prompt", ""), "completions": comps, "comparisons": cmps})
    if len(groups) < 2:
        raise ValueError(f"{path} holds {len(groups)} prompts; at least 2 are needed (one to train, one held out)")
    return groups


def split_groups(groups, val_frac):
    """(train, held-out) by whole prompts: the comparisons of one prompt share completions, so a split
    inside a prompt would score held-out texts the model trained on. A fixed permutation (seed 1234, never
    --seed) picks held-out prompts until they hold val_frac of the comparisons; at least one each side."""
    perm = torch.randperm(len(groups), generator=torch.Generator().manual_seed(1234)).tolist()
    total, n, n_val = sum(len(x["comparisons"]) for x in groups), 0, 0
    while n_val < len(groups) - 1 and (n_val == 0 or n < val_frac * total):
        n += len(groups[perm[n_val]]["comparisons"])
        n_val += 1
    return [groups[i] for i in perm[n_val:]], [groups[i] for i in perm[:n_val]]


def flatten(groups):
    """All completions of the groups in one list, and their comparisons as (M, 2) long indices into it,
    [chosen, rejected] per row."""
    texts, cmp = [], []
    for x in groups:
        cmp += [[len(texts) + c, len(texts) + r] for c, r in x["comparisons"]]
        texts += x["completions"]
    return texts, torch.tensor(cmp, dtype=torch.long).view(-1, 2)


@torch.no_grad()
def evaluate(rm, tok, groups, device):
    """Held-out loss, accuracy against the labels, and against the noiseless rule (where it prefers one)."""
    texts, cmp = flatten(groups)  # cmp: (M, 2)
    r = torch.tensor(score(rm, tok, texts, device))  # (n_texts,) each completion scored once
    g = torch.tensor([gold_score(t) for t in texts])  # (n_texts,)
    loss, stats = bt_loss(r[cmp[:, 0]], r[cmp[:, 1]])
    margin = r[cmp[:, 0]] - r[cmp[:, 1]]  # (M,) r(chosen) - r(rejected)
    gold = g[cmp[:, 0]] - g[cmp[:, 1]]  # (M,) g(chosen) - g(rejected)
    informative = gold != 0  # ties carry no gold preference
    some = bool(informative.any())
    return {
        "val_loss": loss.item(),
        "val_acc": stats["acc"].item(),
        "val_gold_acc": (margin.sign() == gold.sign())[informative].float().mean().item() if some else None,
        "label_gold_agreement": (gold > 0)[informative].float().mean().item() if some else None,
        "val_pairs": len(cmp),
        "val_gold_pairs": int(informative.sum()),
    }


# -----------------------------------------------------------------------------
# training


class DivergedError(Exception):
    """max_bad_steps NaN/inf steps in a row."""


def train_rm(rm, tok, train, val, device, args, ckpt_path, resume=False, log_path=None, log=print):
    """Fit rm to the train pairs with AdamW and the Bradley-Terry loss; returns the final held-out metrics.

    args: rm_steps, rm_batch_size, rm_lr, rm_ckpt_every, seed (add_rm_args). Step s draws its batch from a
    generator seeded by (seed, s), so a run resumed from ckpt_path (written atomically every rm_ckpt_every
    steps and at the end) sees exactly the batches an uninterrupted run sees. A NaN/inf loss or gradient
    skips the step; 3 in a row raise DivergedError. A bad checkpoint on resume raises CheckpointError.
    """
    # the head starts at zero and must grow to the scale of the rewards; the SFT body only needs nudging
    groups = [
        {"params": rm.gpt.parameters(), "lr0": args.rm_lr},
        {"params": rm.head.parameters(), "lr0": 10 * args.rm_lr},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.rm_lr, weight_decay=0.0)
    # encode every training completion once; group i's completions are rows start[i] : start[i] + K_i
    texts, _ = flatten(train)
    all_idx, all_len = encode_texts(texts, tok, device, rm.config.block_size)  # (n_texts, L), (n_texts,)
    start = [0]
    for x in train[:-1]:
        start.append(start[-1] + len(x["completions"]))
    first, elapsed, bad_streak = 0, 0.0, 0
    if resume:
        ck = load_checkpoint(ckpt_path, map_location=device)
        check_model_config(ck["model_config"], rm.config, ckpt_path)
        rm.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        first, elapsed = ck["step"], ck["elapsed"]
        set_rng_state(ck["rng"])
        log(f"resumed from {ckpt_path} at step {first}")
    logger = CSVLogger(log_path, COLUMNS, resume_step=first if resume else None) if log_path else None
    t0 = time.time() - elapsed
    metrics = {}
    rm.train()
    for step in range(first + 1, args.rm_steps + 1):
        # --- batch: rm_batch_size distinct prompts with all their completions and comparisons, drawn from
        # a generator seeded by (seed, step)
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        rows, cmp = [], []
        for i in torch.randperm(len(train), generator=g)[: args.rm_batch_size].tolist():
            cmp += [[len(rows) + c, len(rows) + r] for c, r in train[i]["comparisons"]]
            rows += range(start[i], start[i] + len(train[i]["completions"]))
        rows = torch.tensor(rows, device=device)  # (n,) completions of the batch, each scored once
        cmp = torch.tensor(cmp, device=device)  # (M, 2) [chosen, rejected] indices into the batch
        for group in optimizer.param_groups:  # cosine decay from lr0 to lr0 / 10 (a function of step: resumable)
            group["lr"] = group["lr0"] * (0.1 + 0.45 * (1 + math.cos(math.pi * (step - 1) / args.rm_steps)))
        r = rm(all_idx[rows], all_len[rows])  # (n,)
        loss, stats = bt_loss(r[cmp[:, 0]], r[cmp[:, 1]])  # mean over the batch's M comparisons
        # --- step, unless the loss or gradient is NaN/inf
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
        bad = not (is_finite(loss.detach()) and is_finite(grad_norm))
        if bad:
            optimizer.zero_grad(set_to_none=True)  # skip: weights and AdamW state stay as they were
        else:
            optimizer.step()
        bad_streak = bad_streak + 1 if bad else 0
        if bad_streak >= 3:
            raise DivergedError(f"{bad_streak} steps in a row had a NaN/inf loss or gradient (last: step {step})")
        # --- logging
        row = {"step": step, "loss": loss.item(), "acc": stats["acc"].item(), "grad_norm": grad_norm.item()}
        row.update(time_s=time.time() - t0, skipped=int(bad))
        if step % args.rm_ckpt_every == 0 or step == args.rm_steps:
            metrics = evaluate(rm, tok, val, device)
            row.update({k: metrics[k] for k in ("val_loss", "val_acc", "val_gold_acc") if metrics[k] is not None})
            log(f"rm step {step}: loss {row['loss']:.3f} held-out acc {metrics['val_acc']:.3f} gold acc {_f(metrics)}")
        if logger:
            logger.log(row)
        # --- checkpoint: only after a good step, never from a poisoned state
        if not bad and (step % args.rm_ckpt_every == 0 or step == args.rm_steps):
            ck = {
                "model": rm.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "elapsed": time.time() - t0,
                "rng": rng_state(),
                "config": {k: v for k, v in vars(args).items()},
                "model_config": asdict(rm.config),
            }
            save_checkpoint(ck, ckpt_path)
    if not metrics:  # resumed at the last step: nothing left to train, evaluate what was saved
        metrics = evaluate(rm, tok, val, device)
    metrics["train_time_s"] = round(time.time() - t0, 1)
    metrics["steps"] = args.rm_steps
    return metrics


def _f(metrics):
    return "n/a" if metrics["val_gold_acc"] is None else f"{metrics['val_gold_acc']:.3f}"


def build_and_train_rm(policy, tok, task, args, device, rm_path, resume=False, log_path=None, log=print):
    """Pairs (sampled from policy if args.pairs is missing) -> reward model -> rm_path.

    Returns (rm, metrics). Raises ValueError (bad pairs file, no informative pair), CheckpointError (bad
    checkpoint on resume) or DivergedError.
    """
    if not os.path.exists(args.pairs):
        log(f"no {args.pairs}: sampling preference pairs from the SFT policy")
        stats = generate_data(policy, tok, task, args, device, log=log)
        log(f"{stats['pairs']} pairs, label agreement with the rule {stats['label_agreement']:.3f}: {stats}")
    train, val = split_groups(read_comparisons(args.pairs), args.rm_val_frac)
    torch.manual_seed(args.seed)
    rm = RewardModel(policy.config).to(device)
    if args.rm_init == "sft":
        rm.gpt.load_state_dict(policy.state_dict())  # InstructGPT: the RM starts from the SFT model
    n_train = sum(len(x["comparisons"]) for x in train)
    log(f"reward model: {rm.gpt.num_params() / 1e6:.2f}M params, {args.rm_init} init, {n_train} train pairs")
    ckpt_path = os.path.join(os.path.dirname(os.path.abspath(rm_path)), "rm_ckpt.pt")
    metrics = train_rm(rm, tok, train, val, device, args, ckpt_path, resume, log_path, log)
    metrics["train_pairs"] = n_train
    ck = {"model": rm.state_dict(), "model_config": asdict(rm.config), "chars": tok.chars, "input": "completion"}
    ck.update(task=task.name, info=metrics, pairs=os.path.abspath(args.pairs))
    save_checkpoint(ck, rm_path)
    return rm, metrics


# -----------------------------------------------------------------------------
# what the GRPO driver calls


def add_rm_args(parser):
    """The preference-data and reward-model flags, prefixed --rm- where train_grpo.py has its own."""
    add_data_args(parser)
    parser.add_argument("--rm-steps", type=at_least(1), default=300, help="reward-model training steps")
    parser.add_argument(
        "--rm-batch-size", type=at_least(1), default=8, help="prompts per RM step, each with all its comparisons"
    )
    parser.add_argument("--rm-lr", type=positive(), default=3e-4, help="reward-model learning rate (AdamW)")
    parser.add_argument("--rm-val-frac", type=float, default=0.2, help="fraction of the pairs held out, in (0, 1)")
    parser.add_argument(
        "--rm-init", choices=["sft", "scratch"], default="sft", help="start the RM from the SFT policy or at random"
    )
    parser.add_argument(
        "--rm-ckpt-every", type=at_least(1), default=50, help="evaluate and write rm_ckpt.pt every k RM steps"
    )


def load_rm(path, task, args, device):
    """The reward model saved at path, checked against the task and the model flags. Raises CheckpointError."""
    ck = load_checkpoint(path, map_location=device)
    tok = CharTokenizer(task.chars)
    if ck.get("task") != task.name or ck.get("chars") != tok.chars:
        raise CheckpointError(f"{path} is a reward model for another task or vocabulary; use another --out-dir")
    check_model_config(ck["model_config"], model_config(task, tok, args), path)
    rm = RewardModel(GPTConfig(**ck["model_config"])).to(device)
    rm.load_state_dict(ck["model"])
    return rm, tok, ck.get("info", {})


def load_or_train_rm(task, args, device, master=True, log=print):
    """The reward model from <out-dir>/rm.pth; if missing it is trained first (and its pairs sampled
    from the SFT policy if --pairs is missing). Returns (rm, tok, info): rm in eval mode, no grad; info
    holds its held-out accuracies. args: the flags of utils.sft.add_model_args and add_rm_args, out_dir,
    seed. Under DDP every rank must call it; only rank 0 trains. Raises CheckpointError, ValueError or
    DivergedError with a one-line message.
    """
    path = os.path.join(args.out_dir, "rm.pth")
    args.pairs = getattr(args, "pairs", None) or os.path.join(
        args.out_dir, "prefs.jsonl"
    )  # a driver run keeps its own pairs
    if not os.path.exists(path):
        policy, tok, _ = load_or_train_sft(task, args, device, master, log)  # every rank: it holds a barrier
        if master:
            log(f"no {path}: training the reward model ({args.rm_steps} steps)")
            _, m = build_and_train_rm(policy, tok, task, args, device, path, log=log)
            log(f"saved {path}: held-out accuracy vs labels {m['val_acc']:.3f}, vs the rule {_f(m)}")
        if dist.is_initialized():
            dist.barrier()
    rm, tok, info = load_rm(path, task, args, device)
    rm.eval().requires_grad_(False)
    return rm, tok, info


def rm_reward_fn(rm, tok, device, batch_size=512):
    """A reward function f(prompts, completions) -> list[float]: the RM's score of each completion text
    (the prompt is not read, see the module docstring), batched, under no_grad."""

    def rm_reward(prompts, completions):
        return score(rm, tok, list(completions), device, batch_size)

    return rm_reward


def setup_rewards(task, args, device, master=True, log=print):
    """What the drivers optimise and what they only watch: (reward_funcs, gold_fn).

    reward_funcs: [(name, f, weight)], summed into the reward; gold_fn: f(prompts, completions) or None,
    logged as gold_r beside it (the true objective when the reward is a learned proxy). Shared by
    train_grpo.py and train_ppo.py so that both methods see the same rewards. It lives here, beside the
    reward model, so that utils/ never imports a top-level script.

    arithmetic: its verifiable rewards, no gold_fn (the reward is the truth). shakespeare with
    --reward rm (the default): the learned reward model's score (<out-dir>/rm.pth, trained first with its
    preference pairs if missing) is the reward and the lexicon rule is the gold; with --reward rule the
    rule itself is the reward (no reward model: the pre-RLHF toy, and a way to see reward hacking).
    --reward unset means rm from scratch and rule with --init-from a model the user brings, since the
    reward model's preference pairs are samples of the scratch SFT policy (--reward rm still trains it).
    """
    reward = getattr(args, "reward", None) or ("rm" if getattr(args, "init_from", "scratch") == "scratch" else "rule")
    if task.name != "shakespeare" or reward == "rule":
        return task.reward_funcs, None
    rm, tok, info = load_or_train_rm(task, args, device, master, log)
    acc = info.get("val_gold_acc")
    acc = "n/a" if acc is None else f"{acc:.3f}"
    log(
        f"reward: the reward model {args.out_dir}/rm.pth (held-out pairwise accuracy vs the rule {acc}); gold: the rule"
    )
    return [("rm", rm_reward_fn(rm, tok, device), 1.0)], lexicon_reward


# -----------------------------------------------------------------------------
# the command line

if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="A learned reward model: a GPT with a scalar head, fit to pairwise preferences (Bradley-Terry loss).",
        formatter_class=HelpFormatter,
    )
    add_rm_args(parser)
    parser.add_argument("--out", default=None, help="where to save the reward model (default <out-dir>/rm.pth)")
    parser.add_argument(
        "--out-dir", default="out/shakespeare", help="holds the SFT policy policy.pth (trained if missing)"
    )
    parser.add_argument("--data", default=None, help="the Shakespeare text file (default data/tinyshakespeare.txt)")
    parser.add_argument("--resume", action="store_true", help="continue from rm_ckpt.pt beside --out")
    parser.add_argument("--log", default="logs/rm.csv", help="metrics CSV (columns defined in the docstring)")
    parser.add_argument("--seed", type=int, default=1337, help="random seed (SFT, data, RM init and batches)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to run")
    add_model_args(parser)
    args = parser.parse_args()
    args.pairs = args.pairs or DEFAULT_PAIRS
    if args.n_embd % args.n_head:
        parser.error(f"--n-embd {args.n_embd} is not divisible by --n-head {args.n_head}")
    if not 0 < args.rm_val_frac < 1:
        parser.error(f"--rm-val-frac must be in (0, 1), got {args.rm_val_frac}")
    out = args.out or os.path.join(args.out_dir, "rm.pth")
    ckpt_path = os.path.join(os.path.dirname(os.path.abspath(out)), "rm_ckpt.pt")
    if args.resume and not os.path.exists(ckpt_path):
        fail(f"--resume: no checkpoint at {ckpt_path}")
    device = pick_device(args.device)
    try:
        task = ShakespeareTask(**({"data_path": args.data} if args.data else {}))
        if os.path.exists(args.pairs):
            read_comparisons(args.pairs)  # a malformed file fails now, not after minutes of SFT
        policy, tok, _ = load_or_train_sft(task, args, device)
        _, m = build_and_train_rm(policy, tok, task, args, device, out, resume=args.resume, log_path=args.log)
    except (FileNotFoundError, CheckpointError, ValueError) as e:
        fail(str(e))  # one line, exit 2
    except DivergedError as e:
        fail(f"{e}; last checkpoint kept at {ckpt_path}", code=1)
    print(
        f"held-out ({m['val_pairs']} pairs): accuracy vs labels {m['val_acc']:.3f}, vs the noiseless rule {_f(m)} "
        f"on the {m['val_gold_pairs']} where it has a preference (the labels agree with the rule on "
        f"{m['label_gold_agreement'] or 0:.3f} of those); {m['train_pairs']} train pairs, {m['steps']} steps "
        f"in {m['train_time_s']}s; saved {out}"
    )

"""
Preference data for the reward model: pairs of SFT completions of Shakespeare prompts, labelled by a
simulated labeller that follows a known rule with Bradley-Terry noise. This is the "generate training
data" step of the classic RLHF recipe (Christiano et al. 2017; Ouyang et al. 2022, InstructGPT).

    python simple_example.py                                  # data/prefs.jsonl from out/shakespeare/policy.pth
    python simple_example.py --tau 1.0 --pairs /tmp/p.jsonl   # noisier labels, written elsewhere

The SFT policy is <out-dir>/policy.pth (trained first if missing, with the same flags as train_grpo.py).

The labeller. Its gold score g(text) is tasks/shakespeare.py gold_score on the completion: the number of pleasant
minus grim lexicon words. For a pair (a, b) it prefers a with the Bradley-Terry probability
    P(a > b) = sigmoid((g(a) - g(b)) / tau)          (Bradley & Terry 1952; the model the reward model fits)
so tau -> 0 is the noiseless rule and a large tau is a coin flip. With tau = 0.5 a one-word difference is
labelled as the rule says 88% of the time.

How the pairs are chosen (a selection, stated plainly):
  1. Prompts are random 32-character windows of the training text (task.sample_prompts).
  2. The SFT policy samples K = --samples-per-prompt completions of each prompt (temperature 1, as GRPO
     samples), and every one of the K-choose-2 pairs among them is a comparison, labelled independently
     (as InstructGPT turns one ranking of K completions into K-choose-2 comparisons). A completion is in
     up to K-1 pairs, so pairs of one prompt are correlated: reward_model.py holds out whole prompts.
     Why all pairs: only about 1 completion in 9 holds a lexicon word, so disjoint pairs would cost about
     9 sampled completions per useful pair; all pairs cost about 1.
  3. Pairs whose gold scores tie, g(a) == g(b), are dropped. Most pairs tie (most 32-character completions
     hold no lexicon word); the rule has no preference between them, their label would be a coin flip
     that only adds noise, and "accuracy against the rule" is only defined where the rule prefers one.
     So the kept pairs over-represent completions with lexicon words compared with plain SFT samples,
     and the reward model is never asked to score two neutral completions alike.
  4. Sampling stops once --n-pairs pairs are kept (the last prompt may add a few more), or after
     --max-prompts prompts with what it has.

Output (JSON lines, InstructGPT's shape: a prompt, K completions, comparisons among them), one line per
prompt with at least one comparison:
    {"prompt": "...", "completions": ["...", ... K of them], "comparisons": [[0, 3], [5, 3], ...]}
where [i, j] means the noisy labeller preferred completions[i] over completions[j] (chosen, rejected).
Storing each completion once keeps the file about half the size of one {"chosen", "rejected"} line per
pair. The gold scores are not stored: reward_model.py recomputes them from the text.
"""

import argparse
import itertools
import json
import math
import os
import time

import torch

from tasks import DATA_DIR
from tasks.shakespeare import ShakespeareTask, gold_score
from utils.ckpt import CheckpointError
from utils.common import HelpFormatter, at_least, fail, pick_device, positive
from utils.sft import add_model_args, load_or_train_sft

DEFAULT_PAIRS = os.path.join(DATA_DIR, "prefs.jsonl")


def bt_prob(ga, gb, tau):
    """P(a preferred over b) for gold scores ga, gb under Bradley-Terry with temperature tau."""
    return 1.0 / (1.0 + math.exp(-(ga - gb) / tau))


def make_preference_data(policy, tok, task, n_pairs, k, tau, seed, device, max_prompts, prompts_per_batch=128):
    """Sample, compare, drop ties and label (see the module docstring). Returns (groups, stats).

    groups: one per prompt with at least one comparison, {"prompt", "completions": K texts, "comparisons":
    [[chosen, rejected], ...] indices into completions}; stats: counts and agreement with the noiseless rule.
    Every random draw comes from one generator seeded with `seed`, so the same seed gives the same file.
    """
    g = torch.Generator().manual_seed(seed)
    T = task.max_new_tokens
    groups, n_pairs_kept, n_prompts, n_completions, n_lexicon, n_ties, p_agree = [], 0, 0, 0, 0, 0, []
    while n_pairs_kept < n_pairs and n_prompts < max_prompts:
        B = min(prompts_per_batch, max_prompts - n_prompts)
        prompts = task.sample_prompts(g, B)
        idx = torch.tensor([tok.encode(p) for p in prompts for _ in range(k)], device=device)  # (B*K, P)
        u = torch.rand(B * k, T, generator=g)  # the sampling's random numbers, from our generator
        out, _ = policy.generate(idx, T, temperature=1.0, uniforms=u)  # (B*K, T)
        texts = [tok.decode(r) for r in out.tolist()]  # K completions of prompt b are texts[b*K:(b+1)*K]
        for b, prompt in enumerate(prompts):
            if n_pairs_kept >= n_pairs:
                break
            comps = texts[b * k : (b + 1) * k]
            scores = [gold_score(t) for t in comps]
            n_prompts, n_completions = n_prompts + 1, n_completions + k
            n_lexicon += sum(s != 0 for s in scores)
            comparisons = []
            for i, j in itertools.combinations(range(k), 2):  # all K-choose-2 pairs
                coin = torch.rand(1, generator=g).item()  # drawn for every pair, ties included
                if scores[i] == scores[j]:
                    n_ties += 1  # the rule has no preference: dropped (docstring, point 3)
                    continue
                p = bt_prob(scores[i], scores[j], tau)  # P(i > j)
                comparisons.append([i, j] if coin < p else [j, i])  # [chosen, rejected]
                p_agree.append(max(p, 1 - p))  # the chance this label agrees with the rule
            if comparisons:
                groups.append({"prompt": prompt, "completions": comps, "comparisons": comparisons})
                n_pairs_kept += len(comparisons)
    agree = sum(
        gold_score(x["completions"][c]) > gold_score(x["completions"][r]) for x in groups for c, r in x["comparisons"]
    )
    stats = {
        "prompts": n_prompts,
        "completions": n_completions,
        "frac_with_lexicon_word": n_lexicon / max(n_completions, 1),
        "tied_pairs_dropped": n_ties,
        "prompts_kept": len(groups),
        "pairs": n_pairs_kept,
        "label_agreement": agree / max(n_pairs_kept, 1),  # measured: labels that match the noiseless rule
        "expected_agreement": sum(p_agree) / max(len(p_agree), 1),  # what Bradley-Terry predicts for them
    }
    return groups, stats


def write_jsonl(path, rows):
    """One JSON object per line, written atomically (a temporary file, then os.replace)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for x in rows:
            f.write(json.dumps(x) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def add_data_args(parser):
    """The preference-data flags (shared with reward_model.py, which makes the data when it is missing)."""
    parser.add_argument(
        "--pairs",
        default=None,
        help="the preference pairs file, JSON lines (default data/prefs.jsonl; <out-dir>/prefs.jsonl when a driver trains the RM)",
    )
    parser.add_argument(
        "--n-pairs", type=at_least(2), default=12000, help="stop sampling once this many pairs are kept"
    )
    parser.add_argument(
        "--samples-per-prompt",
        type=at_least(2),
        default=8,
        help="completions sampled per prompt (K), all pairs compared",
    )
    parser.add_argument(
        "--max-prompts", type=at_least(1), default=4096, help="stop sampling after this many prompts, pairs or not"
    )
    parser.add_argument(
        "--tau", type=positive(), default=0.5, help="Bradley-Terry label noise: P(a>b) = sigmoid((g(a)-g(b))/tau)"
    )


def generate_data(policy, tok, task, args, device, log=print):
    """Labelled pairs from the SFT policy -> args.pairs. Returns the stats dict.

    Raises ValueError when not a single pair has differing gold scores (the policy never wrote a lexicon word).
    """
    t0 = time.time()
    groups, stats = make_preference_data(
        policy, tok, task, args.n_pairs, args.samples_per_prompt, args.tau, args.seed, device, args.max_prompts
    )
    stats["time_s"] = round(time.time() - t0, 1)
    if not groups:
        raise ValueError(
            f"no pair with differing gold scores in {stats['completions']} completions: the SFT policy "
            "never wrote a lexicon word (train it longer, or raise --max-prompts)"
        )
    if stats["pairs"] < args.n_pairs:
        log(f"warning: only {stats['pairs']} of --n-pairs {args.n_pairs} pairs within --max-prompts {args.max_prompts}")
    write_jsonl(args.pairs, groups)
    return stats


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="Preference data for the reward model: pairs of SFT completions of Shakespeare prompts, labelled by a noisy rule.",
        formatter_class=HelpFormatter,
    )
    add_data_args(parser)
    parser.add_argument(
        "--out-dir", default="out/shakespeare", help="holds the SFT policy policy.pth (trained if missing)"
    )
    parser.add_argument("--data", default=None, help="the Shakespeare text file (default data/tinyshakespeare.txt)")
    parser.add_argument("--seed", type=int, default=1337, help="random seed (SFT, sampling and labels)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to run")
    add_model_args(parser)
    args = parser.parse_args()
    args.pairs = args.pairs or DEFAULT_PAIRS
    if args.n_embd % args.n_head:
        parser.error(f"--n-embd {args.n_embd} is not divisible by --n-head {args.n_head}")
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    try:
        task = ShakespeareTask(**({"data_path": args.data} if args.data else {}))
        policy, tok, _ = load_or_train_sft(task, args, device)
        stats = generate_data(policy, tok, task, args, device)
    except (FileNotFoundError, CheckpointError, ValueError) as e:
        fail(str(e))  # one line, exit 2
    print(
        f"{stats['pairs']} pairs -> {args.pairs} (tau {args.tau}): label agreement with the noiseless rule "
        f"{stats['label_agreement']:.3f} (Bradley-Terry expects {stats['expected_agreement']:.3f}); "
        f"{stats['completions']} completions of {stats['prompts']} prompts, "
        f"{stats['frac_with_lexicon_word']:.1%} with a lexicon word, {stats['tied_pairs_dropped']} tied pairs dropped; "
        f"{stats['time_s']}s"
    )

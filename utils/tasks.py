"""The two tasks: prompts, reward functions, SFT data and held-out evaluation.

arithmetic  (verifiable rewards, as in DeepSeek-R1): prompt "37+48=", completion "85|" ("|" is the end
            token). Operands 10..99, so every prompt is 6 characters. The 8100 problems are split once,
            with a fixed seed that does not depend on --seed, into 7600 for training and 500 held out.
shakespeare (the original toy): a 32-character window of tiny Shakespeare as prompt, a fixed-length
            32-character completion. The first 90% of the text gives training prompts, the last 10%
            held-out ones. Scored by the rule `gold_score` below (the reward-model issue learns it).

Reward functions are plain Python, f(prompts, completions) -> list[float], each with a weight; the total
reward is the weighted sum. A completion is the decoded text up to and including the end token.
"""

import os
import re

import torch

from model import END

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
SHAKESPEARE = os.path.join(DATA_DIR, "tinyshakespeare.txt")

# -----------------------------------------------------------------------------
# arithmetic


def _answer(prompt):
    a, b = prompt[:-1].split("+")
    return str(int(a) + int(b))


def exact_match(prompts, completions):
    """1.0 when the completion is exactly the sum's digits followed by the end token."""
    return [1.0 if c == _answer(p) + END else 0.0 for p, c in zip(prompts, completions, strict=True)]


_WELL_FORMED = re.compile(r"^\d{1,3}" + re.escape(END) + "$")


def well_formed(prompts, completions):
    """1.0 when the completion is 1-3 digits then the end token (any number: the format, not the sum)."""
    return [1.0 if _WELL_FORMED.match(c) else 0.0 for c in completions]


class ArithmeticTask:
    name = "arithmetic"
    chars = "0123456789+="
    prompt_len = 6
    max_new_tokens = 5  # 3 digits + end token, and 1 to spare: a completion that never ends is truncated
    block_size = 16
    uses_eos = True
    rl_steps = 1200  # default --steps of train_grpo.py / train_ppo.py: >= 0.90 held-out for seeds 1-3 (README)
    reward_funcs = [("exact", exact_match, 1.0), ("format", well_formed, 0.1)]

    def __init__(self, data_path=None):
        problems = [f"{a}+{b}=" for a in range(10, 100) for b in range(10, 100)]
        g = torch.Generator().manual_seed(1234)  # the split never depends on --seed
        perm = torch.randperm(len(problems), generator=g).tolist()
        self.heldout = [problems[i] for i in perm[:500]]
        self.train = [problems[i] for i in perm[500:]]

    def sample_prompts(self, g, n):
        idx = torch.randint(len(self.train), (n,), generator=g).tolist()
        return [self.train[i] for i in idx]

    def sft_batch(self, g, batch_size, tok):
        """(x, y) for next-token SFT on correct solutions; the prompt's targets are -1 (ignored)."""
        prompts = self.sample_prompts(g, batch_size)
        rows = [tok.encode(p + _answer(p)) + [tok.eos_id] for p in prompts]
        T = max(len(r) for r in rows)
        x = torch.full((batch_size, T - 1), tok.eos_id, dtype=torch.long)
        y = torch.full((batch_size, T - 1), -1, dtype=torch.long)
        for i, r in enumerate(rows):
            x[i, : len(r) - 1] = torch.tensor(r[:-1])
            y[i, self.prompt_len - 1 : len(r) - 1] = torch.tensor(r[self.prompt_len :])  # answer + end only
        return x, y

    def evaluate(self, model, tok, device, n=None, split="heldout"):
        """Greedy decoding on the held-out problems (or 500 training ones): exact-match accuracy and
        mean total reward."""
        prompts = self.heldout[:n] if split == "heldout" else self.train[:500]
        idx = torch.tensor([tok.encode(p) for p in prompts], device=device)
        out, _ = model.generate(idx, self.max_new_tokens, temperature=0, eos_id=tok.eos_id)
        comps = [tok.decode_completion(r) for r in out.tolist()]
        acc = sum(exact_match(prompts, comps)) / len(prompts)
        return {"eval_acc": acc, "eval_r": sum(total_reward(self.reward_funcs, prompts, comps)[0]) / len(prompts)}


# -----------------------------------------------------------------------------
# shakespeare

# The gold rule: a small lexicon of pleasant and grim words. g(text) = #pleasant - #grim whole words
# (lower-cased, a word cut off by the end of the completion does not count). Readable, and common
# enough in Shakespeare that a 32-character completion hits one often.
PLEASANT = set(
    "love loves loved lovely sweet fair good joy joyful happy gentle noble dear kind grace gracious peace "
    "heaven hope merry smile honour honest best friend friends true beauty blessed bless glad delight "
    "comfort pretty rich fortune pleasure wise virtue mercy".split()
)
GRIM = set(
    "death die dies dead blood bloody kill killed grief woe hate fear tears sorrow curse cursed grave "
    "poison murder evil villain war sick foul base slain traitor enemy wretch wretched hell shame "
    "weep false cruel vile plague".split()
)
_WORD = re.compile(r"[a-z']+")


def gold_score(text):
    """#pleasant - #grim whole words in text (the last word only counts if followed by a non-letter)."""
    words = _WORD.findall(text.lower())
    if words and text and text[-1].isalpha():  # the completion ends mid-word: drop the fragment
        words = words[:-1]
    return float(sum(w in PLEASANT for w in words) - sum(w in GRIM for w in words))


def lexicon_reward(prompts, completions):
    """The gold rule on the completion alone."""
    return [gold_score(c) for c in completions]


class ShakespeareTask:
    name = "shakespeare"
    prompt_len = 32
    max_new_tokens = 32  # fixed length: no end token is used, every completion has 32 tokens
    block_size = 64
    uses_eos = False
    rl_steps = 100  # default --steps: against the learned reward model, gold peaks early and then falls (README)
    reward_funcs = [("lexicon", lexicon_reward, 1.0)]

    def __init__(self, data_path=SHAKESPEARE):
        if not os.path.exists(data_path):
            raise FileNotFoundError(f"data file {data_path} not found (the repo ships data/tinyshakespeare.txt)")
        with open(data_path) as f:
            self.text = f.read()
        self.chars = "".join(sorted(set(self.text) - {END}))
        n = int(0.9 * len(self.text))
        self.train_text, self.heldout_text = self.text[:n], self.text[n:]
        g = torch.Generator().manual_seed(1234)
        starts = torch.randint(len(self.heldout_text) - self.prompt_len, (128,), generator=g).tolist()
        self.heldout = [self.heldout_text[s : s + self.prompt_len] for s in starts]

    def sample_prompts(self, g, n):
        starts = torch.randint(len(self.train_text) - self.prompt_len, (n,), generator=g).tolist()
        return [self.train_text[s : s + self.prompt_len] for s in starts]

    def sft_batch(self, g, batch_size, tok):
        """(x, y) for next-token language modelling on random block_size windows of the training text."""
        T = self.block_size
        starts = torch.randint(len(self.train_text) - T - 1, (batch_size,), generator=g).tolist()
        rows = torch.tensor([tok.encode(self.train_text[s : s + T + 1]) for s in starts])
        return rows[:, :-1], rows[:, 1:]

    def evaluate(self, model, tok, device, n=None, temperature=1.0):
        """Mean rule score (the gold score) on the held-out prompts, sampled at `temperature` with fixed
        random numbers."""
        prompts = self.heldout[:n]
        idx = torch.tensor([tok.encode(p) for p in prompts], device=device)
        u = torch.rand(len(prompts), self.max_new_tokens, generator=torch.Generator().manual_seed(0))
        out, _ = model.generate(idx, self.max_new_tokens, temperature=temperature, uniforms=u)
        comps = [tok.decode(r) for r in out.tolist()]
        return {"eval_r": sum(total_reward(self.reward_funcs, prompts, comps)[0]) / len(prompts)}


TASKS = {"arithmetic": ArithmeticTask, "shakespeare": ShakespeareTask}


def add_task_args(parser):
    """--task, --reward, --data: the flags of the RL drivers (train_grpo.py, train_ppo.py) that pick what is learned."""
    parser.add_argument("--task", choices=sorted(TASKS), default="arithmetic", help="which task to train on")
    parser.add_argument(
        "--reward",
        choices=["rm", "rule"],
        default="rm",
        help="shakespeare: the learned reward model (gold = the lexicon rule, logged as gold_r) or the rule itself",
    )
    parser.add_argument("--data", default=None, help="shakespeare: the text file (default data/tinyshakespeare.txt)")


def total_reward(reward_funcs, prompts, completions):
    """Weighted sum of reward functions [(name, f, weight)]: (totals list, {name: per-completion list})."""
    parts = {name: fn(prompts, completions) for name, fn, _ in reward_funcs}
    totals = [sum(w * parts[name][i] for name, _, w in reward_funcs) for i in range(len(completions))]
    return totals, parts

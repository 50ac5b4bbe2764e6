"""--task shakespeare: a 32-character window of tiny Shakespeare as prompt, a fixed-length 32-character
completion scored by the gold rule `gold_score` (the reward-model issue learns it, docs/rlhf.md).

    python train_grpo.py --task shakespeare

The first 90% of the text gives training prompts, the last 10% held-out ones.
"""

import os
import re

import torch

from model import END
from tasks.base import DATA_DIR, total_reward
from tasks.rollout import complete

SHAKESPEARE = os.path.join(DATA_DIR, "tinyshakespeare.txt")

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
    correct = sft_examples = sft_progress = None  # no right answer; SFT is language modelling (sft_batch)

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
        u = torch.rand(len(prompts), self.max_new_tokens, generator=torch.Generator().manual_seed(0))
        comps = complete(
            model, tok, prompts, self.max_new_tokens, uses_eos=False, temperature=temperature, uniforms=u, device=device
        )[0]
        return {"eval_r": sum(total_reward(self.reward_funcs, prompts, comps)[0]) / len(prompts)}

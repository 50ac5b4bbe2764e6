"""
GRPO fine-tuning of CLIP for image classification: the class prediction is the action, correctness the reward.

    python clip_grpo.py                                          # = --model-name tiny --dataset shapes, offline
    python clip_grpo.py --model-name tiny --dataset shapes --use-lora --lora-r 8
    python clip_grpo.py --model-name ViT-B/32 --dataset cifar100 --data-dir data --device cuda --amp
    python clip_grpo.py --model-name ViT-B/32 --dataset imagenet --data-dir /data/imagenet --use-lora --lora-r 8
    python clip_grpo.py --resume                                 # continue from <out-dir>/clip_grpo_ckpt.pt
    python plot.py --metric eval_acc logs/clip_grpo.csv

The policy is CLIP's zero-shot classifier. The frozen text encoder embeds every class name (averaged over
prompt templates, Radford et al. 2021, section 3.1.4), and an image x defines a distribution over the C
classes

    pi_theta(c | x) = softmax_c( logit_scale * <f_theta(x), t_c> / temperature )        (B, C)

with f_theta(x) and t_c L2-normalised. One GRPO step (grpo.py, DeepSeekMath eq. 3) on a batch of B images:
  1. rollout: sample G class predictions per image from pi_old (the policy before this step's updates);
  2. reward each: 1 if it is the label, else 0. --smooth-rewards instead gives the fraction of the true
     class's attributes the prediction shares: shapes (shape, colour): "red square" for "red circle" earns
     0.5; CIFAR-100 (superclass, class): a wrong class of the right superclass earns 0.5. A graded reward
     that still depends on the sampled action, so early groups are rarely all-equal;
  3. advantages relative to the image's own group (grpo.group_advantages);
  4. mu = --num-iterations clipped-ratio updates (grpo.grpo_loss; the action is a one-token completion,
     logp (N, 1), mask all ones) plus beta * KL(pi_theta || pi_ref) to the frozen reference CLIP (its own
     frozen logit scale) minus --entropy-weight * H(pi_theta) / log C.

The KL is *exact*: sum_c pi_theta(c|x) (log pi_theta(c|x) - log pi_ref(c|x)), per image, mean over images.
With C classes the whole distribution is one softmax away, so there is nothing to estimate; the k3
estimator of grpo.py (one sample, DeepSeekMath eq. 4) would add noise for no saving. So grpo_loss gets
beta=0 and the exact KL is added here; its k3 estimate on the sampled actions is logged beside it (kl_k3)
to show the two agree. Entropy is the true entropy of the full class distribution (grpo.entropy_from_logits).

How this differs from cross-entropy fine-tuning: CE pushes up log pi(label | x) for the known label on every
image. GRPO never sees the label except through the reward of what it sampled: a correct sample is pushed up
by its advantage, wrong ones down, and an image whose G samples all score the same teaches nothing. It needs
only a scalar reward per prediction (any reward: graded, partial, non-differentiable), at the price of
noisier gradients than CE when the label is available.

How it departs from the original nanoGRPO description (its CLIP section, and the known errors listed with it):
  1. It samples actions. The original weighted log pi(true label) by an advantage, never sampling, which is
     not a policy gradient and pushed the true label *down* on images with a negative advantage.
  2. Its "smooth reward" was the softmax confidence of the true label: the same number for every sample of
     an image, so within-group advantages were zero. Ours scores the sampled prediction.
  3. Advantages are per image (per group), not over the batch; KL is exact, not the sequence k1.
  4. Only the vision side trains (all of it, or LoRA adapters); the text encoder is frozen and its class
     features computed once, from the reference model (it is the same frozen text tower).
  5. --model-name tiny is a random-init CLIP (ViT 2 layers, width 64, 32 px, patch 4) with a word-level
     tokenizer built from the prompts (words = the class names and template words, <|startoftext|>,
     <|endoftext|> as in CLIP; see word_tokenizer). It is not pre-trained: its reference is near chance
     (random features), so on shapes the run shows GRPO learning to classify from scratch, through a frozen
     random text tower, not fine-tuning a good zero-shot model. With a real CLIP it is fine-tuning.

Every random draw of step s comes from a generator seeded by (--seed, s) and the data order of epoch e by
(--seed, e), so a resumed run samples exactly what an uninterrupted one would. The whole metric list is in
the COLUMNS comment below.
"""

import argparse
import copy
import json
import math
import os
import pickle
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from grpo import entropy_from_logits, group_advantages, grpo_loss
from utils.ckpt import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from utils.common import HelpFormatter, at_least, fail, fraction, is_finite, lr_at, pick_device, positive
from utils.metrics import CSVLogger

# -----------------------------------------------------------------------------
# config

MODEL_NAMES = {  # the original's names -> Hugging Face hub ids
    "ViT-B/32": "openai/clip-vit-base-patch32",
    "ViT-B/16": "openai/clip-vit-base-patch16",
    "ViT-L/14": "openai/clip-vit-large-patch14",
}
TEMPLATES = [  # a few of the CLIP paper's ImageNet prompt templates (Radford et al. 2021, appendix)
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
]
# the keys a checkpoint must agree on with the flags: they fix the model, the data and its order
MATCH_KEYS = [
    "model_name",
    "dataset",
    "templates",
    "use_lora",
    "lora_r",
    "lora_alpha",
    "freeze_logit_scale",
    "seed",
    "batch_size",
    "max_train_images",
]
# CSV columns, one definition each (per optimizer step; eval_* only on the last step of an epoch):
#   mean_r, std_r   mean and std of the reward over the step's N = B*G sampled predictions
#   acc_sampled     fraction of the N sampled predictions that are the label (= mean_r without smoothing)
#   frac_zero_std   fraction of images whose G rewards are all equal (their advantage is 0: no signal)
#   kl              exact KL(pi_theta || pi_ref) over the C classes (both at --temperature), mean over the B
#                   images, of the policy before the step's updates
#   kl_k3           the k3 estimate of the same KL on the sampled actions (logged only, not in the loss)
#   entropy         true entropy (nats) of pi_theta(. | x), mean over images, before the update
#   entropy_norm    entropy / log C, in [0, 1]: 1 is uniform over the classes
#   clip_frac       fraction of sampled actions where the PPO clip was active, mean over the mu updates
#   loss, grad_norm the minimised loss and the gradient 2-norm before clipping, mean over the mu updates
#   lr, logit_scale learning rate of the step; the policy's exp(logit_scale) after it
#   eval_acc        held-out top-1 accuracy of the policy (argmax, temperature-free)
#   eval_ref_acc    held-out top-1 accuracy of the frozen reference (the same number every epoch)
#   epoch, time_s   1-based epoch; wall seconds since training started (evaluation included)
#   images_per_s    training images of this step / its wall time
#   skipped         1 if the step had a NaN/inf loss or gradient and the optimizer step was skipped
COLUMNS = [
    "step",
    "epoch",
    "mean_r",
    "std_r",
    "acc_sampled",
    "frac_zero_std",
    "kl",
    "kl_k3",
    "entropy",
    "entropy_norm",
    "clip_frac",
    "loss",
    "grad_norm",
    "lr",
    "logit_scale",
    "eval_acc",
    "eval_ref_acc",
    "time_s",
    "images_per_s",
    "skipped",
]

parser = argparse.ArgumentParser(
    prog="clip_grpo.py",
    description="GRPO fine-tuning of CLIP for image classification",
    formatter_class=HelpFormatter,
)
parser.add_argument(
    "--model-name",
    default="tiny",
    help="tiny (random-init, offline), ViT-B/32, ViT-B/16, ViT-L/14, a hub id or a save_pretrained directory",
)
parser.add_argument(
    "--dataset", choices=["shapes", "cifar100", "imagenet"], default="shapes", help="shapes is synthetic, offline"
)
parser.add_argument(
    "--data-dir", default="data", help="cifar100: holds cifar-100-python/; imagenet: holds train/ and val/"
)
parser.add_argument(
    "--max-train-images", type=at_least(1), default=None, help="use only the first k training images (default: all)"
)
parser.add_argument(
    "--max-eval-images", type=at_least(1), default=None, help="use only the first k held-out images (default: all)"
)
parser.add_argument("--templates", nargs="+", default=TEMPLATES, help="prompt templates, {} is the class name")
parser.add_argument("--epochs", type=at_least(1), default=10, help="passes over the training images")
parser.add_argument("--batch-size", type=at_least(1), default=64, help="images per step (B)")
parser.add_argument(
    "--group-size", type=at_least(2), default=16, help="sampled predictions per image (G); sampling costs no forward"
)
parser.add_argument("--num-iterations", type=at_least(1), default=1, help="updates per rollout (mu)")
parser.add_argument(
    "--lr",
    type=positive(),
    default=None,
    help="peak learning rate (AdamW); default 2e-3 for tiny, 1e-5 for a pretrained CLIP, 1e-4 with --use-lora",
)
parser.add_argument("--warmup-frac", type=fraction, default=0.05, help="fraction of the steps with linear warmup")
parser.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
parser.add_argument("--beta", type=float, default=0.04, help="weight of the exact KL to the reference")
parser.add_argument("--clip-eps", type=positive(), default=0.2, help="PPO clip range")
parser.add_argument("--entropy-weight", type=float, default=0.0, help="bonus on the normalised entropy H / log C")
parser.add_argument(
    "--scale", choices=["group", "batch", "none"], default="group", help="advantage std normalisation, see grpo.py"
)
parser.add_argument("--smooth-rewards", action="store_true", help="graded reward: fraction of attributes right")
parser.add_argument("--temperature", type=positive(), default=1.0, help="softmax temperature for sampling and entropy")
parser.add_argument("--grad-clip", type=positive(), default=5.0, help="clip the gradient's total 2-norm to this")
parser.add_argument("--use-lora", action="store_true", help="train LoRA adapters on the vision attention only (peft)")
parser.add_argument("--lora-r", type=at_least(1), default=8, help="LoRA rank")
parser.add_argument("--lora-alpha", type=at_least(1), default=16, help="LoRA scaling alpha")
parser.add_argument("--freeze-logit-scale", action="store_true", help="keep the policy's logit scale fixed")
parser.add_argument("--amp", action="store_true", help="bf16 autocast for the vision forward (CUDA only)")
parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to run")
parser.add_argument("--seed", type=int, default=1337, help="random seed (tiny init, data order, sampling)")
parser.add_argument(
    "--ckpt-every", type=at_least(1), default=50, help="write <out-dir>/clip_grpo_ckpt.pt every k steps"
)
parser.add_argument(
    "--resume", action="store_true", help="continue from <out-dir>/clip_grpo_ckpt.pt, appending to --log"
)
parser.add_argument("--max-bad-steps", type=at_least(1), default=3, help="stop after this many NaN/inf steps in a row")
parser.add_argument("--out-dir", default="out", help="checkpoint, summary and --save-model directory")
parser.add_argument("--log", default="logs/clip_grpo.csv", help="metrics CSV")
parser.add_argument(
    "--save-model", action="store_true", help="save the policy (LoRA merged) to <out-dir>/clip_grpo_model"
)
# fault injection for the tests (tests/test_clip.py): a NaN loss at these steps; hidden from --help
parser.add_argument("--debug-nan-steps", type=int, nargs="*", default=[], help=argparse.SUPPRESS)


class DataError(Exception):
    """Missing or malformed data; the message (one line) says what to download and where to put it."""


class ModelError(Exception):
    """A CLIP that cannot be loaded; the message is one line."""


# -----------------------------------------------------------------------------
# data: every dataset is (train split, held-out split, class names, class attributes (C, K))


@dataclass
class Split:
    images: object  # np.uint8 (N, H, W, 3) in memory, or a list of N image file paths
    labels: torch.Tensor  # (N,) long

    def __len__(self):
        return len(self.labels)

    def pil(self, i):
        im = self.images[i]
        if isinstance(im, str):
            with Image.open(im) as f:
                return f.convert("RGB")
        return Image.fromarray(im)

    def head(self, k):
        return self if k is None else Split(self.images[:k], self.labels[:k])


SHAPES, COLOURS = (
    ["circle", "square", "triangle", "cross"],
    {
        "red": (220, 40, 40),
        "green": (40, 170, 60),
        "blue": (50, 80, 230),
        "orange": (250, 150, 20),  # "an orange circle": the templates' article must follow the class name
    },
)


def draw_shapes(n, seed, size=32):
    """n images (n, size, size, 3) uint8 of one coloured shape each on a noisy grey background, and labels."""
    rng = np.random.default_rng(seed)
    colours = list(COLOURS.values())
    images, labels = np.empty((n, size, size, 3), np.uint8), np.empty(n, np.int64)
    for i in range(n):
        s, c = rng.integers(len(SHAPES)), rng.integers(len(colours))
        bg = int(rng.integers(0, 120))
        img = Image.new("RGB", (size, size), (bg, bg, bg))
        d = ImageDraw.Draw(img)
        r = rng.uniform(0.2, 0.35) * size  # half the shape's extent
        cx, cy = rng.uniform(r + 1, size - r - 1, 2)
        fill = tuple(int(v) for v in np.clip(np.array(colours[c]) + rng.integers(-25, 26, 3), 0, 255))
        if SHAPES[s] == "circle":
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif SHAPES[s] == "square":
            d.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif SHAPES[s] == "triangle":
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
        else:  # a plus sign, bars a third of the extent wide
            w = r / 3
            d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
            d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
        noise = rng.normal(0, 8, (size, size, 3))
        images[i] = np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8)
        labels[i] = c * len(SHAPES) + s  # class "colour shape"
    return images, torch.from_numpy(labels)


def load_shapes(n_train=6000, n_heldout=1000):
    """The synthetic set: 4 colours x 4 shapes = 16 classes, 32 px. Fixed seeds, independent of --seed."""
    names = [f"{c} {s}" for c in COLOURS for s in SHAPES]
    attrs = torch.tensor([[c, s] for c in range(len(COLOURS)) for s in range(len(SHAPES))])  # (C, 2): colour, shape
    return Split(*draw_shapes(n_train, seed=1234)), Split(*draw_shapes(n_heldout, seed=4321)), names, attrs


def _unpickle(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")  # the files were pickled by Python 2


def load_cifar100(data_dir):
    """The standard cifar-100-python folder (train, test, meta pickles); test is the held-out split.

    Falls back to the Hugging Face hub (uoft-cs/cifar100) when the folder is missing and the `datasets`
    library with a network or a cache is there.
    """
    root = next(
        (d for d in (os.path.join(data_dir, "cifar-100-python"), data_dir) if os.path.isfile(f"{d}/meta")), None
    )
    if root is None:
        return _cifar100_from_hub(data_dir)
    meta = _unpickle(f"{root}/meta")
    splits, superclass = [], {}  # every fine class lies in one of 20 superclasses
    for name in ("train", "test"):
        if not os.path.isfile(f"{root}/{name}"):
            raise DataError(f"{root}/{name} is missing; unpack cifar-100-python.tar.gz again")
        d = _unpickle(f"{root}/{name}")
        images = np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
        splits.append(Split(np.ascontiguousarray(images), torch.tensor(d["fine_labels"])))
        superclass.update(zip(d["fine_labels"], d["coarse_labels"], strict=True))
    names = [n.replace("_", " ") for n in meta["fine_label_names"]]
    attrs = torch.tensor([[superclass.get(c, -1), c] for c in range(len(names))])  # (C, 2): superclass, class
    return splits[0], splits[1], names, attrs


def _cifar100_from_hub(data_dir):
    help_msg = (
        f"CIFAR-100 not found in {data_dir}: download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz "
        f"and unpack it there (giving {data_dir}/cifar-100-python/{{train,test,meta}})"
    )
    try:
        import datasets
    except ImportError:
        raise DataError(help_msg) from None
    try:
        ds = datasets.load_dataset("uoft-cs/cifar100")
    except Exception as e:  # the hub raises many types (connection, not found, offline); all mean "not here"
        raise DataError(f"{help_msg} (the Hugging Face hub failed too: {type(e).__name__})") from None
    names = [n.replace("_", " ") for n in ds["train"].features["fine_label"].names]
    out = []
    for split in ("train", "test"):
        images = np.stack([np.asarray(im.convert("RGB"), np.uint8) for im in ds[split]["img"]])
        out.append(Split(images, torch.tensor(ds[split]["fine_label"])))
    superclass = dict(zip(ds["train"]["fine_label"], ds["train"]["coarse_label"], strict=True))
    attrs = torch.tensor([[superclass.get(c, -1), c] for c in range(len(names))])
    return out[0], out[1], names, attrs


IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def load_imagefolder(data_dir):
    """An image-folder tree, <data-dir>/{train,val}/<class>/<image>, as torchvision's ImageFolder reads it.

    Class names are the folder names with _ as spaces, or, for ImageNet's synset folders (n01440764), the
    first name in <data-dir>/LOC_synset_mapping.txt ("n01440764 tench, Tinca tinca" -> "tench").
    """
    help_msg = "download ImageNet (e.g. the Kaggle ImageNet object localization set) and sort it into"
    dirs = [os.path.join(data_dir, s) for s in ("train", "val")]
    for d in dirs:
        if not os.path.isdir(d):
            raise DataError(f"{d} not found: {help_msg} {data_dir}/train/<class>/*.JPEG and {data_dir}/val/<class>/")
    classes = sorted(e.name for e in os.scandir(dirs[0]) if e.is_dir())
    if not classes:
        raise DataError(f"{dirs[0]} has no class folders: {help_msg} {data_dir}/train/<class>/*.JPEG")
    splits = []
    for d in dirs:
        paths, labels = [], []
        for c, name in enumerate(classes):
            folder = os.path.join(d, name)
            files = (
                sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTS)) if os.path.isdir(folder) else []
            )
            paths += [os.path.join(folder, f) for f in files]
            labels += [c] * len(files)
        if not paths:
            raise DataError(f"{d} holds no images ({', '.join(IMAGE_EXTS)}) in folders named like {dirs[0]}'s")
        splits.append(Split(paths, torch.tensor(labels)))
    mapping = os.path.join(data_dir, "LOC_synset_mapping.txt")
    readable = {}
    if os.path.isfile(mapping):
        with open(mapping) as f:
            for line in f:
                wnid, _, rest = line.strip().partition(" ")
                readable[wnid] = rest.split(",")[0].strip()
    names = [readable.get(c, c.replace("_", " ")) for c in classes]
    attrs = torch.arange(len(classes)).unsqueeze(1)  # (C, 1): no hierarchy in a folder tree
    return splits[0], splits[1], names, attrs


CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])  # OpenAI CLIP's normalisation
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])


def preprocess(img, size):
    """CLIP's preprocessing in PIL: resize the shorter side to `size` (bicubic), centre crop, normalise."""
    w, h = img.size
    if min(w, h) != size:
        s = size / min(w, h)
        img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)  # (3, S, S) in [0, 1]
    return (x - CLIP_MEAN[:, None, None]) / CLIP_STD[:, None, None]


def pixels(split, idx, size):
    return torch.stack([preprocess(split.pil(i), size) for i in idx])  # (B, 3, S, S)


# -----------------------------------------------------------------------------
# models


def prompts_for(name, templates):
    """The templates filled with a class name, with "a" before a vowel made "an" ("an orange circle").
    The rule is on the first letter, which is right for every CIFAR-100 and shapes class name."""
    article = "an" if name[0].lower() in "aeiou" else "a"
    return [re.sub(r"\ban? \{\}", article + " {}", t).format(name) for t in templates]


def word_tokenizer(texts):
    """A word-level tokenizer over exactly the words of `texts`, laid out like CLIP's: lower-cased,
    <|startoftext|> words <|endoftext|>, padded with <|endoftext|>, which has the highest id (CLIP's text
    model pools at the first end token). A Hugging Face tokenizer, so save_pretrained / AutoTokenizer
    round-trip it; a word it never saw maps to <unk>."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]+", t.lower())})  # = Whitespace's split
    vocab = {w: i for i, w in enumerate(words + ["<unk>", "<|startoftext|>", "<|endoftext|>"])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    sot, eot = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    tk.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", sot), ("<|endoftext|>", eot)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


def build_tiny(tok, seed):
    """A random-init CLIP small enough for a CPU: both towers 2 layers, width 64; images 32 px, patch 4."""
    from transformers import CLIPConfig, CLIPModel

    specials = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=32, **specials),
        vision_config=dict(image_size=32, patch_size=4, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                           num_attention_heads=4),
        projection_dim=64,
    )  # fmt: skip
    torch.manual_seed(seed)
    return CLIPModel(cfg)


def load_clip(name, texts, seed):
    """(model, tokenizer) for --model-name: tiny is built here, anything else goes through from_pretrained."""
    if name == "tiny":
        tok = word_tokenizer(texts)
        return build_tiny(tok, seed), tok
    from transformers import AutoTokenizer, CLIPModel

    path = MODEL_NAMES.get(name, name)
    if path.startswith((".", "/", "~")) and not os.path.isdir(os.path.expanduser(path)):
        raise ModelError(f"--model-name {path}: no such directory (a save_pretrained directory, or tiny, or ViT-B/32)")
    try:
        model = CLIPModel.from_pretrained(os.path.expanduser(path))
        tok = AutoTokenizer.from_pretrained(os.path.expanduser(path))  # CLIPTokenizer for OpenAI's checkpoints
    except OSError as e:
        why = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ModelError(
            f"cannot load CLIP {path!r} ({why}); without a network, on a machine with one run "
            f"CLIPModel.from_pretrained({path!r}).save_pretrained(DIR) and the same with AutoTokenizer, "
            "copy DIR here and pass --model-name DIR"
        ) from None
    return model, tok


def add_lora(model, r, alpha):
    """LoRA adapters on the vision tower's attention projections (peft); everything else is frozen."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=r".*vision_model.*\.(q_proj|k_proj|v_proj|out_proj)"
    )
    return get_peft_model(model, cfg)


def build_models(args, names, device):
    """(policy, ref, tokenizer, trained params, text features (C, D)) as the flags ask.

    The reference is a frozen copy taken before any training or LoRA. The policy trains its vision tower
    and projection (or only LoRA adapters) and its logit scale unless --freeze-logit-scale."""
    texts = [p for n in names for p in prompts_for(n, args.templates)]
    policy, tok = load_clip(args.model_name, texts, args.seed)
    ref = copy.deepcopy(policy).to(device).eval().requires_grad_(False)
    policy.requires_grad_(False)
    if args.use_lora:
        policy = add_lora(policy, args.lora_r, args.lora_alpha)  # only the adapters require grad
    else:
        policy.vision_model.requires_grad_(True)
        policy.visual_projection.requires_grad_(True)
    policy.logit_scale.requires_grad_(not args.freeze_logit_scale)
    policy.to(device).train()
    params = [p for p in policy.parameters() if p.requires_grad]
    text_feats = text_features(ref, tok, names, args.templates, device)  # the frozen text tower, once
    return policy, ref, tok, params, text_feats


@torch.no_grad()
def text_features(model, tok, names, templates, device):
    """(C, D) class embeddings: each template's text feature normalised, averaged, normalised again."""
    max_len = model.config.text_config.max_position_embeddings
    feats = []
    for name in names:
        batch = tok(
            prompts_for(name, templates), padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )
        out = model.text_model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        )
        t = F.normalize(model.text_projection(out.pooler_output).float(), dim=-1)  # (n_templates, D)
        feats.append(F.normalize(t.mean(0), dim=-1))
    return torch.stack(feats)  # (C, D)


def class_logits(model, x, text_feats, temperature, ctx):
    """(B, C) logits of pi(c | x) = softmax(logit_scale * cos(f(x), t_c) / temperature). Vision forward under
    ctx (autocast); normalisation and the logits in float32 outside it."""
    with ctx:
        img = model.visual_projection(model.vision_model(pixel_values=x).pooler_output)  # (B, D)
    img = F.normalize(img.float(), dim=-1)
    scale = model.logit_scale.exp().clamp(max=100.0)  # CLIP clips the scale at 100 (Radford et al. 2021, 2.5)
    return scale * img @ text_feats.T / temperature  # (B, C)


# -----------------------------------------------------------------------------
# rollout and reward


def sample_actions(logits, u):
    """G class predictions per image by inverse-CDF sampling: logits (B, C), u (B, G) uniforms on the CPU
    (the same numbers on any device). Returns (B*G,) long, the G samples of image b at rows b*G:(b+1)*G."""
    cdf = F.softmax(logits.detach().float(), dim=-1).cumsum(-1)  # (B, C)
    actions = torch.searchsorted(cdf, u.to(cdf.device).contiguous())  # (B, G)
    return actions.clamp(max=logits.size(1) - 1).view(-1)  # clamp: cdf[-1] can round below u


def rewards_for(actions, labels, attrs, smooth):
    """(N,) reward of each sampled prediction: 1 if it is the label, else 0; with smooth, the fraction of
    the label's attributes (colour/shape, superclass/class) the prediction shares, in [0, 1]."""
    if not smooth:
        return (actions == labels).float()
    return (attrs[actions] == attrs[labels]).float().mean(-1)


def grpo_step(policy, optimizer, params, x, labels, text_feats, ref_logits, attrs, u, args, ctx, nan=None):
    """One GRPO step on B images: rollout of G predictions each, then mu clipped updates. Returns (stats, bad).

    x (B, 3, S, S), labels (B,), ref_logits (B, C) of the frozen reference, u (B, G) uniforms.
    bad is True when a loss or gradient was NaN/inf: the whole step was then skipped (earlier updates undone).
    nan: fault injection (tests): a NaN loss at this update (0-based).
    """
    B, G, C = x.size(0), u.size(1), text_feats.size(0)
    ref_logp_all = F.log_softmax(ref_logits, dim=-1)  # (B, C)
    losses, norms, clips, stats = [], [], [], {}
    if args.num_iterations > 1:  # a NaN in update 2+ undoes the step's earlier updates too
        saved = ([p.detach().clone() for p in params], copy.deepcopy(optimizer.state_dict()))
    for it in range(args.num_iterations):
        logits = class_logits(policy, x, text_feats, args.temperature, ctx)  # (B, C)
        logp_all = F.log_softmax(logits, dim=-1)  # (B, C)
        if it == 0:  # rollout from pi_old: the policy before any of this step's mu updates, i.e. this forward
            actions = sample_actions(logits, u)  # (N,)
            r = rewards_for(actions, labels.repeat_interleave(G), attrs, args.smooth_rewards)  # (N,)
            adv = group_advantages(r, G, scale=args.scale)  # (N,) one group per image
            old_logp = logp_all.detach().repeat_interleave(G, 0).gather(1, actions[:, None])  # (N, 1)
            ref_logp = ref_logp_all.repeat_interleave(G, 0).gather(1, actions[:, None])  # (N, 1)
        logp = logp_all.repeat_interleave(G, 0).gather(1, actions[:, None])  # (N, 1) one-token completions
        # exact KL(pi_theta || pi_ref) over the C classes, per image, then the mean over images
        kl = (logp_all.exp() * (logp_all - ref_logp_all)).sum(-1).mean()
        H = entropy_from_logits(logits.unsqueeze(1), torch.ones(B, 1, device=logits.device))  # nats
        pg_loss, s = grpo_loss(logp, old_logp, ref_logp, adv, torch.ones_like(logp), clip_eps=args.clip_eps, beta=0.0)
        loss = pg_loss + args.beta * kl - args.entropy_weight * H / math.log(C)
        if nan == it:
            loss = loss * float("nan")  # fault injection (tests only)
        if it == 0:
            stats = {
                "kl": kl.item(),
                "kl_k3": s["kl"].item(),
                "entropy": H.item(),
                "entropy_norm": H.item() / math.log(C),
            }
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
        if not (is_finite(loss.detach()) and is_finite(grad_norm)):
            optimizer.zero_grad(set_to_none=True)  # skip the step: parameters and AdamW state as before it
            if it > 0:
                with torch.no_grad():
                    for p, p0 in zip(params, saved[0], strict=True):
                        p.copy_(p0)
                optimizer.load_state_dict(saved[1])
            return {**stats, **_reward_stats(r, actions, labels, G)}, True
        optimizer.step()
        losses.append(loss.item())
        norms.append(grad_norm.item())
        clips.append(s["clip_frac"].item())
    stats.update(loss=sum(losses) / len(losses), grad_norm=sum(norms) / len(norms), clip_frac=sum(clips) / len(clips))
    return {**stats, **_reward_stats(r, actions, labels, G)}, False


def _reward_stats(r, actions, labels, G):
    return {
        "mean_r": r.mean().item(),
        "std_r": r.std().item(),
        "acc_sampled": (actions == labels.repeat_interleave(G)).float().mean().item(),
        "frac_zero_std": (r.view(-1, G).std(dim=1) == 0).float().mean().item(),
    }


@torch.no_grad()
def accuracy(model, split, text_feats, size, device, ctx, batch_size=256):
    """Top-1 accuracy (argmax over the classes) of a model on a split."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(split), batch_size):
        idx = range(i, min(i + batch_size, len(split)))
        pred = class_logits(model, pixels(split, idx, size).to(device), text_feats, 1.0, ctx).argmax(-1).cpu()
        correct += (pred == split.labels[i : i + len(idx)]).sum().item()
    model.train(was_training)
    return correct / len(split)


# -----------------------------------------------------------------------------
# the driver


def main(argv=None):
    args = parser.parse_args(argv)
    if not all(t.count("{}") == 1 for t in args.templates):
        parser.error("every --templates entry needs exactly one {} for the class name")
    if args.beta < 0 or args.entropy_weight < 0 or args.weight_decay < 0:
        parser.error("--beta, --entropy-weight and --weight-decay must be >= 0")
    tiny = args.model_name == "tiny"
    lr = args.lr or (2e-3 if tiny else 1e-4 if args.use_lora else 1e-5)
    ckpt_path = os.path.join(args.out_dir, "clip_grpo_ckpt.pt")
    ck = None
    if args.resume:  # before the slow parts: a bad checkpoint costs a second, not a model load
        if not os.path.exists(ckpt_path):
            fail(f"--resume: no checkpoint at {ckpt_path}")
        try:
            ck = load_checkpoint(ckpt_path)
        except CheckpointError as e:
            fail(f"--resume: {e}")
        if not isinstance(ck, dict) or not {"trained", "optimizer", "step", "config"} <= ck.keys():
            fail(f"--resume: {ckpt_path} is not a clip_grpo.py checkpoint")
        diff = [
            f"{k}={ck['config'].get(k)!r} (flags: {getattr(args, k)!r})"
            for k in MATCH_KEYS
            if ck["config"].get(k) != getattr(args, k)
        ]
        if diff:
            fail(
                f"--resume: {ckpt_path} does not match the flags: {', '.join(diff)}; use matching flags or another --out-dir"
            )
    device = pick_device(args.device)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    if args.amp and device_type == "cpu":
        print("--amp acts on CUDA only; running in float32 on the CPU")
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if args.amp and device_type == "cuda" else nullcontext()

    # --- data
    try:
        if args.dataset == "shapes":
            n_train, n_heldout = min(6000, args.max_train_images or 6000), min(1000, args.max_eval_images or 1000)
            train, heldout, names, attrs = load_shapes(n_train, n_heldout)  # the first k images of the fixed set
        elif args.dataset == "cifar100":
            train, heldout, names, attrs = load_cifar100(args.data_dir)
        else:
            train, heldout, names, attrs = load_imagefolder(args.data_dir)
    except DataError as e:
        fail(str(e))
    train, heldout = train.head(args.max_train_images), heldout.head(args.max_eval_images)
    if args.smooth_rewards and attrs.size(1) == 1:
        fail(f"--smooth-rewards needs a label hierarchy; {args.dataset} has none (its reward would be the 0/1 one)")
    B, G, C = args.batch_size, args.group_size, len(names)
    steps_per_epoch = len(train) // B  # the last incomplete batch of an epoch is dropped
    if steps_per_epoch == 0:
        fail(f"--batch-size {B} is larger than the {len(train)} training images")
    total_steps = args.epochs * steps_per_epoch
    attrs = attrs.to(device)

    # --- models
    try:
        policy, ref, tok, params, text_feats = build_models(args, names, device)
    except ModelError as e:
        fail(str(e))
    size = policy.config.vision_config.image_size
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=args.weight_decay)
    start_step, elapsed = 0, 0.0
    if ck is not None:
        if ck["trained"].keys() != {n for n, p in policy.named_parameters() if p.requires_grad}:
            fail(f"--resume: {ckpt_path} holds other trained parameters than these flags train")
        policy.load_state_dict(ck["trained"], strict=False)
        optimizer.load_state_dict(ck["optimizer"])
        start_step, elapsed = ck["step"], ck["elapsed"]
        set_rng_state(ck["rng"])
        print(f"resumed from {ckpt_path} at step {start_step}")
    n_train = sum(p.numel() for p in params)
    print(f"{args.model_name}: {n_train / 1e6:.3f}M trained parameters; {C} classes, {len(train)} train / "
          f"{len(heldout)} held-out images, {steps_per_epoch} steps per epoch, {total_steps} steps, lr {lr:g}")  # fmt: skip
    ref_acc = accuracy(ref, heldout, text_feats, size, device, ctx)  # frozen: one number for the whole run
    start_acc = accuracy(policy, heldout, text_feats, size, device, ctx)
    print(f"held-out top-1: reference {ref_acc:.3f}, policy {start_acc:.3f} (step {start_step})")
    try:
        logger = CSVLogger(args.log, COLUMNS, resume_step=start_step if args.resume else None)
    except ValueError as e:  # resuming into a CSV written by another script
        fail(f"--resume: {e}")

    # --- training loop
    t_start, bad_streak, skipped, row = time.time() - elapsed, 0, 0, {}
    for step in range(start_step + 1, total_steps + 1):
        t_step = time.time()
        epoch, k = (step - 1) // steps_per_epoch, (step - 1) % steps_per_epoch
        perm = torch.randperm(
            len(train), generator=torch.Generator().manual_seed(1_000_003 * args.seed + 10**8 + epoch)
        )
        idx = perm[k * B : (k + 1) * B].tolist()
        x, labels = pixels(train, idx, size).to(device), train.labels[idx].to(device)
        u = torch.rand(B, G, generator=torch.Generator().manual_seed(1_000_003 * args.seed + step))  # (B, G)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total_steps, lr, args.warmup_frac)
        with torch.no_grad():
            ref_logits = class_logits(ref, x, text_feats, args.temperature, ctx)  # (B, C)
        stats, bad = grpo_step(
            policy,
            optimizer,
            params,
            x,
            labels,
            text_feats,
            ref_logits,
            attrs,
            u,
            args,
            ctx,
            nan=0 if step in args.debug_nan_steps else None,
        )
        bad_streak, skipped = (bad_streak + 1, skipped + 1) if bad else (0, skipped)
        # --- logging
        row = {
            "step": step,
            "epoch": epoch + 1,
            **stats,
            "lr": optimizer.param_groups[0]["lr"],
            "logit_scale": policy.logit_scale.exp().item(),
            "images_per_s": B / (time.time() - t_step),
            "skipped": int(bad),
        }
        if k == steps_per_epoch - 1:  # the epoch's last step: evaluate on the held-out split
            row["eval_acc"] = accuracy(policy, heldout, text_feats, size, device, ctx)
            row["eval_ref_acc"] = ref_acc
            print(f"epoch {epoch + 1} step {step}: mean_r {stats['mean_r']:.3f} kl {stats['kl']:.3f} "
                  f"entropy_norm {stats['entropy_norm']:.3f} held-out acc {row['eval_acc']:.3f} (reference {ref_acc:.3f})", flush=True)  # fmt: skip
        row["time_s"] = time.time() - t_start
        logger.log(row)
        if bad_streak >= args.max_bad_steps:
            fail(f"{bad_streak} steps in a row had a NaN/inf loss or gradient (last: step {step}); stopping, "
                 f"last good checkpoint kept at {ckpt_path}", code=1)  # fmt: skip
        # --- checkpoint: only after a good step, from a finite state
        if not bad and (step % args.ckpt_every == 0 or step == total_steps):
            if not all(is_finite(p) for p in params):
                fail(f"non-finite parameters at step {step}; not writing a checkpoint", code=1)
            trained = {n: p.detach().cpu() for n, p in policy.named_parameters() if p.requires_grad}
            ck = {
                "trained": trained,
                "optimizer": optimizer.state_dict(),
                "step": step,
                "elapsed": time.time() - t_start,
                "rng": rng_state(),
                "config": {k: v for k, v in vars(args).items() if k != "debug_nan_steps"},
            }
            save_checkpoint(ck, ckpt_path)

    # --- summary
    final_acc = row.get("eval_acc", start_acc) if row else start_acc
    summary = {
        "model": args.model_name,
        "dataset": args.dataset,
        "steps": total_steps,
        "ref_acc": ref_acc,
        "start_acc": start_acc,
        "final_acc": final_acc,
        "skipped_steps": skipped,
        "train_time_s": round(time.time() - t_start, 1),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "trained_params": n_train,
        "flags": {k: v for k, v in vars(args).items() if k != "debug_nan_steps"},
    }
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "clip_grpo_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    if args.save_model:
        out = os.path.join(args.out_dir, "clip_grpo_model")
        model = policy.merge_and_unload() if args.use_lora else policy  # a plain CLIPModel either way
        model.save_pretrained(out)
        tok.save_pretrained(out)
        print(f"saved the policy to {out} (load it with --model-name {out})")
    print(
        f"held-out top-1: reference {ref_acc:.3f} -> GRPO policy {final_acc:.3f} in {summary['train_time_s']}s; log {args.log}"
    )
    return summary


if __name__ == "__main__":
    main()

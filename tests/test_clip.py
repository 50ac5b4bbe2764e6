"""clip_grpo.py: data loaders on files in the real formats, model loading, one GRPO step, resume, bad inputs.

Most runs are in-process (clip_grpo.main(argv)): transformers takes seconds to import, once per process.
One subprocess smoke run checks the script as a user runs it, and the exit code of a bad input.
"""

import csv
import math
import os
import pickle
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run
from PIL import Image

import clip_grpo as cg
from grpo import group_advantages
from utils.ckpt import load_checkpoint, save_checkpoint

# a run of a few steps: 4 steps of 16 images, 32 held-out images
SMALL = ["--epochs", "1", "--max-train-images", "64", "--max-eval-images", "32", "--batch-size", "16"]
SMALL += ["--group-size", "4", "--ckpt-every", "2"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """In-process runs on one thread, as conftest.run gives subprocesses: two threads on a shared 2-core
    machine spin against each other and run several times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def flags(tmp_path, *extra):
    return [*SMALL, "--out-dir", str(tmp_path / "out"), "--log", str(tmp_path / "c.csv"), *map(str, extra)]


# -----------------------------------------------------------------------------
# data


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 byte strings (BINSTRING), as the real cifar-100-python files,
    pickled by Python 2's cPickle, hold them (keys, class names and the arrays' raw data)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        b = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(b) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(b)]) + b)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(b)) + b)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def write_py2(obj, path):
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)


def test_cifar100_loader_reads_real_format(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    fine_names = ["apple", "aquarium_fish", "bear", "maple_tree"]  # the real files have 100 fine, 20 coarse
    write_py2(
        {"fine_label_names": fine_names, "coarse_label_names": ["fruit", "fish", "mammals", "trees"]}, root / "meta"
    )
    for split, n in (("train", 6), ("test", 3)):
        data = np.zeros((n, 3072), np.uint8)  # a row: 1024 red, 1024 green, 1024 blue, each row-major 32x32
        data[:, 0] = np.arange(n) * 10  # red at (row 0, col 0)
        data[:, 1024 + 1] = 200  # green at (row 0, col 1)
        data[:, 2048 + 32] = 100  # blue at (row 1, col 0)
        fine = [i % 4 for i in range(n)]
        write_py2({"batch_label": split, "fine_labels": fine, "coarse_labels": fine, "data": data}, root / split)
    train, test, names, attrs = cg.load_cifar100(str(tmp_path))
    assert (len(train), len(test)) == (6, 3)
    assert names == ["apple", "aquarium fish", "bear", "maple tree"]
    assert train.labels.tolist() == [0, 1, 2, 3, 0, 1]
    img = np.asarray(train.pil(5))  # (32, 32, 3) RGB
    assert img.shape == (32, 32, 3)
    assert tuple(img[0, 0]) == (50, 0, 0) and tuple(img[0, 1]) == (0, 200, 0) and tuple(img[1, 0]) == (0, 0, 100)
    assert attrs.tolist() == [[0, 0], [1, 1], [2, 2], [3, 3]]  # (superclass, class)
    assert cg.load_cifar100(str(root))[3].shape == (4, 2)  # --data-dir may also be the folder itself


def test_imagefolder_loader_and_preprocess(tmp_path):
    colours = {"n01": (255, 0, 0), "n02": (0, 0, 255)}
    for split, n in (("train", 3), ("val", 2)):
        for wnid, rgb in colours.items():
            (tmp_path / split / wnid).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 20), rgb).save(tmp_path / split / wnid / f"{i}.png")
    (tmp_path / "train" / "n01" / "notes.txt").write_text("not an image")
    (tmp_path / "LOC_synset_mapping.txt").write_text("n01 tench, Tinca tinca\nn02 goldfish, Carassius auratus\n")
    train, val, names, attrs = cg.load_imagefolder(str(tmp_path))
    assert names == ["tench", "goldfish"]
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1] and val.labels.tolist() == [0, 0, 1, 1]
    assert attrs.shape == (2, 1)
    x = cg.pixels(val, [0, 3], 32)  # a 40x20 image: shorter side to 32 (64x32), centre crop 32x32
    assert x.shape == (2, 3, 32, 32)
    want = (torch.tensor([0.0, 0.0, 1.0]) - cg.CLIP_MEAN) / cg.CLIP_STD  # pure blue, normalised
    assert torch.allclose(x[1].mean((1, 2)), want, atol=1e-3)


def test_shapes_and_missing_data_messages(tmp_path):
    train, held, names, attrs = cg.load_shapes(40, 10)
    assert len(train) == 40 and len(held) == 10 and len(names) == 16 and attrs.shape == (16, 2)
    first = cg.load_shapes(20, 10)[0]  # --max-train-images 20 draws the first 20 images of the same set
    assert torch.equal(first.labels, train.labels[:20]) and np.array_equal(first.images, train.images[:20])
    assert not np.array_equal(train.images[:10], held.images)  # held-out images are other images
    with pytest.raises(cg.DataError, match="cifar-100-python.tar.gz"):
        cg.load_cifar100(str(tmp_path))
    with pytest.raises(cg.DataError, match="train not found"):
        cg.load_imagefolder(str(tmp_path))


def test_prompts_use_the_right_article():
    t = ["a photo of a {}.", "itap of a {}.", "a photo of the large {}."]
    assert cg.prompts_for("orange circle", t) == [
        "a photo of an orange circle.",
        "itap of an orange circle.",
        "a photo of the large orange circle.",
    ]
    assert cg.prompts_for("red circle", ["an image of an {}."]) == ["an image of a red circle."]


# -----------------------------------------------------------------------------
# models


def test_tiny_clip_saved_with_save_pretrained_loads_by_path(tmp_path):
    names = cg.load_shapes(1, 1)[2]
    texts = [p for n in names for p in cg.prompts_for(n, cg.TEMPLATES)]
    model, tok = cg.load_clip("tiny", texts, seed=0)
    assert tok.unk_token_id not in tok(texts)["input_ids"][0]
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded, tok2 = cg.load_clip(str(tmp_path / "m"), texts, seed=1)  # the real from_pretrained path
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    a = cg.text_features(model, tok, names, cg.TEMPLATES, "cpu")
    b = cg.text_features(loaded, tok2, names, cg.TEMPLATES, "cpu")
    assert torch.allclose(a, b) and a.shape == (16, 64)
    with pytest.raises(cg.ModelError, match="no such directory"):
        cg.load_clip(str(tmp_path / "missing"), texts, seed=0)


def setup_step(*extra):
    args = cg.parser.parse_args(["--group-size", "4", "--lr", "1e-2", *extra])
    train, _, names, attrs = cg.load_shapes(8, 1)
    policy, ref, tok, params, text_feats = cg.build_models(args, names, "cpu")
    opt = torch.optim.AdamW(params, lr=args.lr)
    x = cg.pixels(train, range(8), policy.config.vision_config.image_size)
    with torch.no_grad():
        ref_logits = cg.class_logits(ref, x, text_feats, 1.0, cg.nullcontext())
    u = torch.rand(8, 4, generator=torch.Generator().manual_seed(0))
    return args, policy, ref, opt, params, x, train.labels, text_feats, ref_logits, attrs, u


def changed_after_step(*extra):
    args, policy, ref, opt, params, x, labels, tf, ref_logits, attrs, u = setup_step(*extra)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    ref_before = {k: v.clone() for k, v in ref.state_dict().items()}
    tf_before = tf.clone()
    stats, bad = cg.grpo_step(policy, opt, params, x, labels, tf, ref_logits, attrs, u, args, cg.nullcontext())
    assert not bad
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in ref_before.items()), "the reference moved"
    assert torch.equal(tf, tf_before)
    after = policy.state_dict()
    return {k for k, v in before.items() if not torch.equal(v, after[k])}, stats


def test_one_step_trains_vision_only():
    changed, stats = changed_after_step()
    assert any(k.startswith("vision_model.") for k in changed)
    assert "visual_projection.weight" in changed and "logit_scale" in changed
    assert not [k for k in changed if k.startswith(("text_model.", "text_projection."))]
    assert 0 <= stats["entropy_norm"] <= 1 and stats["kl"] == 0.0  # before the update the policy is the ref
    changed, _ = changed_after_step("--freeze-logit-scale")
    assert "logit_scale" not in changed


def test_lora_changes_only_adapters():
    changed, _ = changed_after_step("--use-lora", "--lora-r", "4", "--freeze-logit-scale")
    assert changed and all(".lora_" in k for k in changed), changed  # lora_A waits a step: lora_B starts at 0
    assert any(".lora_B." in k and "vision_model" in k for k in changed)


def test_exact_kl_and_entropy_match_second_implementation():
    args, policy, ref, opt, params, x, labels, tf, ref_logits, attrs, u = setup_step()
    with torch.no_grad():  # move the policy away from the reference first
        for p in params:
            p.add_(0.05 * torch.randn_like(p))
        logits = cg.class_logits(policy, x, tf, 1.0, cg.nullcontext())
    stats, _ = cg.grpo_step(policy, opt, params, x, labels, tf, ref_logits, attrs, u, args, cg.nullcontext())
    p, q = torch.distributions.Categorical(logits=logits), torch.distributions.Categorical(logits=ref_logits)
    assert stats["kl"] == pytest.approx(torch.distributions.kl_divergence(p, q).mean().item(), rel=1e-4)
    assert stats["kl"] > 1e-3
    assert stats["entropy"] == pytest.approx(p.entropy().mean().item(), rel=1e-5)
    assert stats["entropy_norm"] == pytest.approx(stats["entropy"] / math.log(16), rel=1e-6)


def test_sampled_actions_rewards_advantages():
    B, G, C = 3, 4000, 5
    logits = torch.randn(B, C)
    u = torch.rand(B, G, generator=torch.Generator().manual_seed(0))
    a = cg.sample_actions(logits, u)
    assert a.shape == (B * G,) and a.dtype == torch.long and 0 <= a.min() and a.max() < C
    freq = F.one_hot(a.view(B, G), C).float().mean(1)  # (B, C) empirical distribution per image
    assert torch.allclose(freq, F.softmax(logits, -1), atol=0.03)
    assert cg.sample_actions(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.999999999]])).item() == 1  # cdf rounding
    attrs = torch.tensor([[c, s] for c in range(4) for s in range(4)])  # shapes: (colour, shape)
    actions, labels = torch.tensor([0, 1, 4, 5]), torch.tensor([0, 0, 0, 0])  # red circle is class 0
    assert cg.rewards_for(actions, labels, attrs, smooth=False).tolist() == [1, 0, 0, 0]
    assert cg.rewards_for(actions, labels, attrs, smooth=True).tolist() == [1, 0.5, 0.5, 0]
    adv = group_advantages(cg.rewards_for(actions, labels, attrs, True).repeat(2), 4)
    assert adv.shape == (8,) and torch.allclose(adv.view(2, 4).sum(1), torch.zeros(2), atol=1e-5)


# -----------------------------------------------------------------------------
# runs, resume, faults, bad inputs


def test_smoke_subprocess_and_plot(tmp_path):
    p = run("clip_grpo.py", *flags(tmp_path, "--save-model"), timeout=240)
    assert p.returncode == 0, p.stderr
    assert "held-out top-1: reference" in p.stdout
    r = rows(tmp_path / "c.csv")
    assert list(r[0]) == cg.COLUMNS
    assert [int(x["step"]) for x in r] == [1, 2, 3, 4]
    assert r[-1]["eval_acc"] != "" and r[0]["eval_acc"] == ""
    assert all(math.isfinite(float(x[c])) for x in r for c in ("mean_r", "kl", "entropy_norm", "loss", "lr"))
    assert os.path.isfile(tmp_path / "out" / "clip_grpo_model" / "config.json")
    p = run("plot.py", "--metric", "eval_acc", tmp_path / "c.csv", "-o", tmp_path / "acc.png", timeout=120)
    assert p.returncode == 0, p.stderr
    assert os.path.getsize(tmp_path / "acc.png") > 0
    p = run("clip_grpo.py", *flags(tmp_path, "--group-size", "1"), timeout=120)
    assert p.returncode == 2 and "--group-size" in p.stderr


def test_nan_stop_then_resume_matches_uninterrupted(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    cg.main(flags(a))  # uninterrupted: 4 steps
    with pytest.raises(SystemExit) as e:  # steps 3 and 4 NaN: stop after 2 in a row, checkpoint of step 2 kept
        cg.main(flags(b, "--debug-nan-steps", 3, 4, "--max-bad-steps", 2))
    assert e.value.code == 1
    assert "2 steps in a row had a NaN/inf" in capsys.readouterr().err
    rb = rows(b / "c.csv")
    assert [x["skipped"] for x in rb] == ["0", "0", "1", "1"]
    assert load_checkpoint(b / "out" / "clip_grpo_ckpt.pt")["step"] == 2  # not from the poisoned steps
    cg.main(flags(b, "--resume"))
    assert "resumed from" in capsys.readouterr().out
    ra, rb = rows(a / "c.csv"), rows(b / "c.csv")
    assert [int(x["step"]) for x in rb] == [1, 2, 3, 4]  # no repeated, no missing step
    strip = lambda rs: [{k: v for k, v in x.items() if k not in ("time_s", "images_per_s")} for x in rs]
    assert strip(ra) == strip(rb)
    ca, cb = (load_checkpoint(d / "out" / "clip_grpo_ckpt.pt") for d in (a, b))
    assert ca["step"] == cb["step"] == 4
    for k in ca["trained"]:
        assert torch.equal(ca["trained"][k], cb["trained"][k]), k


def exits_2(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        cg.main(argv)
    err = capsys.readouterr().err.strip()
    if err.startswith("usage:"):  # argparse: the usage, then one error line
        err = err.splitlines()[-1]
    assert e.value.code == 2 and message in err and len(err.splitlines()) == 1, err
    return err


def test_bad_inputs_exit_2(tmp_path, capsys):
    exits_2(capsys, flags(tmp_path, "--group-size", 1), "must be >= 2")
    exits_2(capsys, flags(tmp_path, "--lr", 0), "must be > 0")
    exits_2(capsys, flags(tmp_path, "--lr", -1e-3), "must be > 0")
    exits_2(capsys, flags(tmp_path, "--clip-eps", 0), "must be > 0")
    exits_2(capsys, flags(tmp_path, "--num-iterations", 0), "must be >= 1")
    exits_2(capsys, flags(tmp_path, "--resume"), "no checkpoint at")
    exits_2(capsys, flags(tmp_path, "--dataset", "cifar100", "--data-dir", tmp_path), "cifar-100-python.tar.gz")
    exits_2(capsys, flags(tmp_path, "--dataset", "imagenet", "--data-dir", tmp_path), "not found")
    ckpt = tmp_path / "out" / "clip_grpo_ckpt.pt"
    save_checkpoint({"trained": {}, "optimizer": {}, "step": 1, "config": {"x": torch.zeros(1000)}}, ckpt)
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    exits_2(capsys, flags(tmp_path, "--resume"), "corrupt or truncated")

    class Payload:  # unpickling it would run os.system
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"step": Payload()}, ckpt)
    exits_2(capsys, flags(tmp_path, "--resume"), "refused")
    assert not (tmp_path / "pwned").exists()


def test_resume_refuses_other_flags(tmp_path, capsys):
    cg.main(flags(tmp_path, "--epochs", 1))
    err = exits_2(capsys, flags(tmp_path, "--resume", "--batch-size", 8), "does not match the flags")
    assert "batch_size=16" in err
    exits_2(capsys, flags(tmp_path, "--resume", "--use-lora"), "use_lora=False")


def test_a_step_raises_log_pi_of_good_actions_and_lowers_bad_ones():
    """The policy gradient's direction: after one small step (beta 0, no entropy term), the sampled
    predictions with positive advantage became more likely and those with negative advantage less."""
    args, policy, ref, opt, params, x, labels, tf, ref_logits, attrs, u = setup_step(
        "--lr", "1e-4", "--beta", "0", "--entropy-weight", "0"
    )
    G = u.size(1)

    def logp_of(actions):
        with torch.no_grad():
            logits = cg.class_logits(policy, x, tf, args.temperature, cg.nullcontext())  # (B, C)
        return F.log_softmax(logits, -1).repeat_interleave(G, 0).gather(1, actions[:, None]).squeeze(1)  # (N,)

    with torch.no_grad():
        actions = cg.sample_actions(cg.class_logits(policy, x, tf, args.temperature, cg.nullcontext()), u)  # (N,)
    adv = group_advantages(cg.rewards_for(actions, labels.repeat_interleave(G), attrs, args.smooth_rewards), G)
    assert (adv > 0).any() and (adv < 0).any()
    before = logp_of(actions)
    _, bad = cg.grpo_step(policy, opt, params, x, labels, tf, ref_logits, attrs, u, args, cg.nullcontext())
    assert not bad
    delta = logp_of(actions) - before  # (N,)
    assert delta[adv > 0].mean() > 0 > delta[adv < 0].mean()
    assert (adv * delta).sum() > 0  # the surrogate A * log pi went up


def test_nan_in_the_second_update_undoes_the_first():
    """mu = 2 and a NaN at the second update: the step is skipped whole, parameters and AdamW state as before."""
    args, policy, ref, opt, params, x, labels, tf, ref_logits, attrs, u = setup_step("--num-iterations", "2")
    cg.grpo_step(policy, opt, params, x, labels, tf, ref_logits, attrs, u, args, cg.nullcontext())  # Adam has state
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    opt_before = {i: {k: v.clone() for k, v in s.items()} for i, s in opt.state_dict()["state"].items()}
    _, bad = cg.grpo_step(policy, opt, params, x, labels, tf, ref_logits, attrs, u, args, cg.nullcontext(), nan=1)
    assert bad
    assert all(torch.equal(v, policy.state_dict()[k]) for k, v in before.items())
    after = opt.state_dict()["state"]
    assert all(torch.equal(v, after[i][k]) for i, s in opt_before.items() for k, v in s.items())

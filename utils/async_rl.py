"""Asynchronous rollouts on torch.distributed: `torchrun --nproc_per_node=K+1 train_grpo.py --rollout-workers K`.

Rank 0 is the learner (it trains, evaluates, logs, checkpoints); ranks 1..K are rollout workers (they only sample
and score). Rollouts travel to the learner as tensors (dist.send / recv), the weights back after every step.

The schedule is fixed, so a run's numbers never depend on timing (two runs of one command write one CSV):
  - the learner's step s trains on batch s, which worker owner(s) samples from the step's own prompts and
    random numbers (the generator seeded by seed and s, as in the single-process run);
  - with the weights of version need(s) = max(start, s - 1 - S): the policy after need(s) of the learner's steps,
    S = --max-staleness. The batch's policy lag, (s - 1) - need(s), is S once s > S + 1 (less at the start);
  - a worker that lacks that version waits for it (pacing): no sample is produced stale and then thrown away.
After step v the learner sends version v to the one worker that needs it, the owner of step v + 1 + S. With S = 0
nothing overlaps (a worker waits for the weights of the step before); with S >= 1 a worker samples batch s + 1
while the learner trains on batch s.
"""

import torch
import torch.distributed as dist

HEADER = 8  # step, version, rows, prompt width, completion width, reward parts, error-message bytes, 0


def owner(step, start, workers):
    """The worker rank (1..K) that samples the batch of a learner step: round robin from the first step."""
    return 1 + (step - start - 1) % workers


def need(step, start, staleness):
    """The policy version (learner steps done) a step's batch is sampled with: S steps behind, never before start."""
    return max(start, step - 1 - staleness)


def flat_params(model):
    """Every parameter of model in one contiguous float32 vector (the message that carries the weights)."""
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach().float().clone()


def load_flat(model, flat):
    """Write a flat_params vector into model's parameters."""
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(flat.to(next(model.parameters()).dtype), model.parameters())


def send_weights(model, version, dst):
    """Start sending the weights of a version to a worker without waiting for it (isend); returns the pending
    works, which hold the buffers until the worker has them (wait on them before the process ends)."""
    return [dist.isend(torch.tensor([version]), dst), dist.isend(flat_params(model), dst)]


def recv_weights(model, src):
    """A worker's side of send_weights: wait for the next weights, load them into model; returns their version."""
    version, flat = torch.zeros(1, dtype=torch.long), flat_params(model)
    dist.recv(version, src)
    dist.recv(flat, src)
    load_flat(model, flat)
    return int(version)


def send_batch(batch, dst):
    """Send one sampled batch to the learner: a header, then its tensors in a fixed order. batch: step, version
    (ints); seq (n, P+T) long; pmask (n, P) long; mask, env_mask, behav_logp (n, T) float; r (n,); parts (n, R)."""
    seq, pmask, parts = batch["seq"], batch["pmask"], batch["parts"]
    n, P, T = seq.size(0), pmask.size(1), batch["mask"].size(1)
    dist.send(torch.tensor([batch["step"], batch["version"], n, P, T, parts.size(1), 0, 0]), dst)
    for t in (seq, pmask):
        dist.send(t.long().contiguous(), dst)
    for t in (batch["mask"], batch["env_mask"], batch["behav_logp"], batch["r"], parts):
        dist.send(t.float().contiguous(), dst)


def send_error(step, message, dst):
    """Tell the learner that sampling a step's batch failed (a tool raised, a bad prompt), in one line."""
    data = torch.tensor(list(message.encode()[:4000]), dtype=torch.uint8)
    dist.send(torch.tensor([step, -1, 0, 0, 0, 0, data.numel(), 0]), dst)
    dist.send(data, dst)


class WorkerError(RuntimeError):
    """A worker reported that it could not sample a batch; the message names the prompt."""


def recv_batch(src):
    """The learner's side of send_batch: the batch dict (step, version, tensors). Raises WorkerError when the
    worker reported a failure instead."""
    h = torch.zeros(HEADER, dtype=torch.long)
    dist.recv(h, src)
    step, version, n, P, T, R, err, _ = h.tolist()
    if err:
        data = torch.zeros(err, dtype=torch.uint8)
        dist.recv(data, src)
        raise WorkerError(bytes(data.tolist()).decode(errors="replace"))
    out = {"step": step, "version": version}
    for name, shape, dtype in (
        ("seq", (n, P + T), torch.long),
        ("pmask", (n, P), torch.long),
        ("mask", (n, T), torch.float),
        ("env_mask", (n, T), torch.float),
        ("behav_logp", (n, T), torch.float),
        ("r", (n,), torch.float),
        ("parts", (n, R), torch.float),
    ):
        out[name] = torch.zeros(shape, dtype=dtype)
        dist.recv(out[name], src)
    return out

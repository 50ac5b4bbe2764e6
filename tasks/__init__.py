"""The tasks: what the policy learns (--task), one file per built-in task, the interface in tasks/base.py.

    python train_grpo.py --task arithmetic   # or shakespeare, chain, chain_tool, jsonl:FILE, FILE.py:Class

The layers import downward only: base.py (the interface, TaskError, total_reward, the checks) <- rollout.py
(completing prompts, greedy evaluation, SFT batches) <- the task files <- loader.py (the registry, load_task)
<- this file, which re-exports what the drivers use.
"""

from tasks.base import DATA_DIR, TaskError, check_scratch, total_reward
from tasks.loader import TASKS, add_task_args, load_task
from tasks.rollout import complete, encode_prompts, evaluate_greedy, sft_batch_from_examples, trigger_id

__all__ = [
    "DATA_DIR",
    "TASKS",
    "TaskError",
    "add_task_args",
    "check_scratch",
    "complete",
    "encode_prompts",
    "evaluate_greedy",
    "load_task",
    "sft_batch_from_examples",
    "total_reward",
    "trigger_id",
]

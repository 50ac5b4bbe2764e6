"""Small helpers shared by the drivers: checkpoints, CSV metrics, tasks and data, device/DDP setup."""

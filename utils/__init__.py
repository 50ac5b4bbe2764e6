"""Small helpers shared by the drivers: checkpoints, CSV metrics, SFT, device/DDP setup. The tasks are in tasks/."""

"""The settings of bench/reproduce.py's modes: the CPU page ("full"), "quick", "smoke", and the GPU recipe ("gpu",
"gpu-smoke"). One design (rows, seeds, rules) at different sizes."""

from __future__ import annotations

from .runs import Setting


TINY_SHAPE = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256)
GPU_SHAPE = dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=1408)
SMOKE_SHAPE = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


def setting_for(mode: str) -> Setting:
    """The setting of a mode: "full", "quick", "smoke", "gpu" or "gpu-smoke"."""
    setting = Setting(shape=dict(TINY_SHAPE))
    if mode == "quick":
        setting.pool, setting.warm_pool, setting.held_out, setting.validation = 800, 1000, 150, 150
        setting.iterations, setting.seeds, setting.few_seeds, setting.extend_limit = 3, [0, 1, 2], 2, 1
    elif mode in ("smoke", "gpu-smoke"):
        setting.shape = dict(SMOKE_SHAPE)
        setting.pool, setting.warm_pool, setting.held_out, setting.validation = 64, 64, 16, 16
        setting.iterations, setting.seeds, setting.few_seeds, setting.grid_seeds = 2, [0, 1], 2, 2
        setting.sft_grid, setting.selfplay_grid, setting.rms_grid = [2], [1], [-1]  # one rate each: no grid
        setting.extend_limit, setting.warm_epochs, setting.batch_size, setting.warm_batch_size = 0, 1, 8, 16
        setting.selection_threshold = 0.5  # so that selection triggers even at this size
    elif mode == "gpu":
        # One H100/H200, 8 runs at once: a 26M-parameter Llama (40x the CPU model), 2.5x the data, 4 p_data paths and
        # 4 samples per held-out prompt. The design (rows, seeds, rules) is the CPU page's.
        setting.name = "shifted-draws-gpu"
        setting.shape = dict(GPU_SHAPE)
        setting.pool, setting.warm_pool, setting.held_out, setting.validation = 4000, 5000, 1000, 500
        setting.batch_size, setting.warm_batch_size, setting.warm_epochs, setting.warm_lr = 64, 64, 6, 1e-3
        setting.sft_grid, setting.selfplay_grid, setting.rms_grid = [0, 1, 2], [-1, 0, 1], [-3, -2, -1]
        setting.eval_paths, setting.eval_samples = 4, 4
        setting.eval_batch_size = setting.generation_batch_size = 4096
    if mode == "gpu-smoke":
        setting.name = "shifted-draws-gpu-smoke"
    return setting

"""Three-stage finetuning of a chosen configuration (the UDC paper's section 5).

Stage 1 trains with quantization and no pruning; stage 2 anneals pruning from 0 to the chosen sparsity
(masks recomputed every 16 steps from |theta| of the slice the widths deploy, so the deployed tensor
keeps exactly the chosen share, quantization still on); stage 3 trains with both at
their final settings. During stages 1-2 each weight is quantized with probability alpha and
otherwise clipped to the quantizer's range; stage 3 quantizes every weight, as deployed. With
``qhat`` the quantizer is Q-hat, whose grid starts at the pruning boundary beta.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from core.data import Dataset
from search.settings import UDC_QUICK
from search.space import GraphNet, SearchableLayer
from search.strategy import recipe as recipes
from search.strategy.uniform import MASK_INTERVAL, pruning_schedule, training_batches, training_step

# Ours (``recipe``): Adam, stages 1 and 2 each decay from lr to lr/100 without restarts (appendix E: SGD,
# 0.1 -> 1e-4 with restarts in stage 1: the ``paper`` preset), no augmentation.
OUR_RECIPE = {key: UDC_QUICK[key] for key in ("optimizer", "weight_decay", "final_lr_fraction", "restart_steps", "augment")}


def active_layers(model: GraphNet) -> list[SearchableLayer]:
    inactive = model.inactive_layers()
    return [layer for name, layer in model.layers.items() if isinstance(layer, SearchableLayer) and name not in inactive]


def weight_norm(model: GraphNet) -> float:
    """||theta||^2 over the layers the configuration keeps (Fig. 3's measure of weight growth)."""
    return float(sum(layer.theta.detach().square().sum() for layer in active_layers(model)))


def stage_lengths(steps: int, fractions) -> tuple[int, int, int]:
    first, second = (int(round(f * steps)) for f in fractions[:2])
    return first, second, max(0, steps - first - second)


def finetune(model: GraphNet, dataset: Dataset, steps: int, batch_size: int, lr: float,
             stage_fractions=(0.4, 0.4, 0.2), quant_noise: float = 0.5, qhat: bool = True, seed: int = 0,
             quiet: bool = False, description: str = "finetune", recipe: dict | None = None) -> dict[str, float]:
    """Finetune ``model`` in place at its selected options (bits, nonzero, width, skipped blocks);
    masks end at the selected nonzero fractions. ``recipe``: the optimiser, schedule and augmentation
    settings (``search.strategy.recipe``; default ``OUR_RECIPE``). Returns ||theta||^2 before and after, and its
    trajectory ([step, norm] about 20 times over the run: the paper's Fig. 3)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    layers = active_layers(model)
    model.relax()
    model.set_kept_inputs()  # masks and ranges cover the slice the selected widths deploy
    for layer in layers:
        layer.pruning_offset = qhat
        layer.quantize_probability = quant_noise
        layer.mask = None  # stage 1: no pruning
        layer.init_range(nonzero=1.0)
    norm_before = weight_norm(model)
    stages = stage_lengths(steps, stage_fractions)
    first, second, _ = stages
    schedules = [pruning_schedule(layer.nonzero, second) for layer in layers]
    recipe = {**OUR_RECIPE, **(recipe or {})}
    optimizer = recipes.theta_optimizer(model, lr, recipe)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: recipes.finetune_lr_factor(
        step, stages, recipe["final_lr_fraction"], recipe["restart_steps"]))

    def prune(step_in_stage: int) -> None:
        for layer, keep_at in zip(layers, schedules):
            layer.refresh_mask(keep_at(step_in_stage))

    model.train()
    every, trajectory = max(1, steps // 20), [[0, norm_before]]
    batches = recipes.batches(training_batches(dataset, rng, steps, batch_size, next(model.parameters()).device),
                              recipe, rng)
    progress = tqdm(batches, total=steps, desc=description, leave=False, disable=True if quiet else None)
    for step, (images, labels) in enumerate(progress):
        in_stage_two = step - first
        if 0 <= in_stage_two < second and in_stage_two % MASK_INTERVAL == 0:
            prune(in_stage_two)
        elif step == first + second:
            prune(second)  # the final masks, fixed for stage 3
            for layer in layers:
                layer.quantize_probability = 1.0
                layer.init_range()
        training_step(model, optimizer, schedule, images, labels, progress, step)
        if (step + 1) % every == 0:
            trajectory.append([step + 1, weight_norm(model)])
    progress.close()
    if first + second >= steps:  # no stage 3 steps ran: still deploy at the final masks
        prune(second)
    for layer in layers:
        layer.quantize_probability = 1.0
    model.eval()
    return {"before": norm_before, "after": weight_norm(model), "trajectory": trajectory}

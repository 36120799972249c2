"""``UniformCompression`` gives every layer the same (bits, nonzero) choice: pretrain the float
supernet with BatchNorm, fold BN, then per pair finetune a copy with quantization and magnitude
pruning in the loop (the UDC paper's section 5: pruning annealed 0 -> the chosen sparsity with masks recomputed from
|theta| every 16 steps, then fixed; learned quantizer ranges) and emit a candidate.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from core.candidate import Candidate
from core.data import Dataset
from core.errors import UsageError
from search.device import resolve as resolve_device
from search.settings import QUICK
from search.space import SUPERNETS, GraphNet, build_torch, make_supernet, to_candidate

MASK_INTERVAL = 16  # steps between magnitude-mask updates (the UDC paper's Alg. 2, line 4)



def candidate_name(supernet: str, bits: int, nonzero: float) -> str:
    """e.g. ``uniform-mbv2-b4-s50`` for 4 bits and nonzero fraction 0.5."""
    return f"uniform-{supernet}-b{bits}-s{round(nonzero * 100)}"


def evaluate(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (on its device) on NHWC images ``x`` with labels ``y``."""
    was_training = model.training
    model.eval()
    correct, on = 0, next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size])).to(on))
            correct += int((logits.argmax(dim=1).cpu().numpy() == y[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / len(x)


class UniformCompression:
    """The same bitwidth and nonzero fraction in every layer, for each requested (bits, nonzero) pair.

    Use ``run()`` for everything, or ``pretrain()`` / ``folded_supernet()`` / ``finetune_candidate()``
    to cache the pretrained weights and skip candidates already made. Each candidate is seeded from
    (seed, bits, nonzero), so it comes out the same whatever else was skipped.
    """

    def __init__(self, dataset: Dataset, supernet: str = "mbv2", bits: Sequence[int] = (8, 4, 2),
                 nonzero: Sequence[float] = (1.0, 0.5, 0.2), pretrain_epochs: int = QUICK["pretrain_epochs"],
                 finetune_steps: int = QUICK["finetune_steps"], batch_size: int = QUICK["batch_size"],
                 finetune_batch_size: int = QUICK["finetune_batch_size"],
                 lr: float = QUICK["lr"], finetune_lr: float = QUICK["finetune_lr"],
                 anneal_fraction: float = QUICK["anneal_fraction"], seed: int = 0, quiet: bool = False,
                 device: str = QUICK["device"]):
        if supernet not in SUPERNETS:
            raise UsageError(f"unknown supernet {supernet!r}; choose one of {', '.join(SUPERNETS)}")
        bad_bits = [b for b in bits if not (isinstance(b, int) and 1 <= b <= 8)]
        if bad_bits or not bits:
            raise UsageError(f"bits must be integers in 1..8 (Ethos-U deploys int8), got {list(bits)}")
        bad_nonzero = [s for s in nonzero if not 0.0 < s <= 1.0]
        if bad_nonzero or not nonzero:
            raise UsageError(f"nonzero fractions must be in (0, 1], got {list(nonzero)}")
        if not 0.0 <= anneal_fraction <= 1.0:
            raise UsageError(f"anneal_fraction must be in [0, 1], got {anneal_fraction}")
        self.dataset, self.supernet = dataset, supernet
        self.bits, self.nonzero = tuple(bits), tuple(float(s) for s in nonzero)
        self.pretrain_epochs, self.finetune_steps = pretrain_epochs, finetune_steps
        self.batch_size, self.finetune_batch_size = batch_size, finetune_batch_size
        self.lr, self.finetune_lr = lr, finetune_lr
        self.anneal_fraction, self.seed, self.quiet = anneal_fraction, seed, quiet
        self.device = resolve_device(device)
        torch.set_num_threads(os.cpu_count() or 1)

    def settings(self) -> dict:
        """The training settings, JSON-able: recorded in each candidate's meta and fit for a cache key."""
        return {"pretrain_epochs": self.pretrain_epochs, "finetune_steps": self.finetune_steps,
                "batch_size": self.batch_size, "finetune_batch_size": self.finetune_batch_size, "lr": self.lr,
                "finetune_lr": self.finetune_lr,
                "anneal_fraction": self.anneal_fraction, "seed": self.seed}

    def pairs(self) -> list[tuple[int, float]]:
        return [(b, s) for b in self.bits for s in self.nonzero]

    def candidate_names(self) -> list[str]:
        return [candidate_name(self.supernet, b, s) for b, s in self.pairs()]

    def _new_supernet(self, batchnorm: bool) -> GraphNet:
        return make_supernet(self.supernet, self.dataset.input_shape, self.dataset.num_classes, batchnorm=batchnorm,
                             bit_options=self.bits, nonzero_options=self.nonzero)

    def pretrain(self) -> dict[str, torch.Tensor]:
        """Train the float supernet with BatchNorm, fold BN and return the folded state dict.

        The state depends on the dataset, supernet, ``bits`` (one range per option) and settings();
        key a cache on those."""
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        model = self._new_supernet(batchnorm=True).to(self.device)
        total_steps = int(self.pretrain_epochs * (len(self.dataset.x_train) // self.batch_size))
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr, fused=True)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.lr, total_steps=max(1, total_steps))
        self._train(model, self._batches(rng, total_steps, self.batch_size), optimizer, schedule, total_steps,
                    f"pretrain {self.supernet}")
        model.fold_batchnorm()
        return {name: value.cpu() for name, value in model.state_dict().items()}

    def folded_supernet(self, state: dict[str, torch.Tensor]) -> GraphNet:
        """The BN-free supernet holding a state dict returned by ``pretrain``."""
        model = self._new_supernet(batchnorm=False)
        model.load_state_dict(state)
        return model

    def finetune_candidate(self, folded_model: GraphNet, bits: int, nonzero: float) -> Candidate:
        """Finetune a copy of the folded supernet at (bits, nonzero) in every layer and emit its candidate."""
        seed = int(np.random.SeedSequence([self.seed, bits, round(nonzero * 1000)]).generate_state(1)[0])
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        model = copy.deepcopy(folded_model).to(self.device)
        model.select(bits=bits, nonzero=nonzero)
        model.init_ranges()
        steps = self.finetune_steps
        anneal_steps = int(self.anneal_fraction * steps)
        keep_at = pruning_schedule(nonzero, anneal_steps)
        model.refresh_masks(keep_at(0))
        optimizer = torch.optim.Adam(scaled_lr_groups(model, self.finetune_lr), fused=True)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))

        def refresh_masks(step: int) -> None:
            # Stage 2 moves the masks towards their final sparsity; stage 3 trains under the final mask.
            if 0 < step <= anneal_steps and (step % MASK_INTERVAL == 0 or step == anneal_steps):
                model.refresh_masks(keep_at(step))

        name = candidate_name(self.supernet, bits, nonzero)
        self._train(model, self._batches(rng, steps, self.finetune_batch_size), optimizer, schedule, steps, name,
                    before_step=refresh_masks)
        meta = {"strategy": "uniform", "bits": bits, "nonzero": nonzero, "supernet": self.supernet,
                "dataset": self.dataset.name, "train": self.settings()}
        candidate = to_candidate(model, name, meta)
        candidate.spec["meta"]["accuracy_float"] = evaluate(build_torch(candidate), self.dataset.x_test,
                                                            self.dataset.y_test)
        return candidate

    def run(self, pretrained_state: dict[str, torch.Tensor] | None = None,
            skip: Iterable[str] = ()) -> Iterator[Candidate]:
        """Yield a candidate per (bits, nonzero) pair not named in ``skip``, pretraining first unless given a state."""
        skip = set(skip)
        todo = [(b, s) for b, s in self.pairs() if candidate_name(self.supernet, b, s) not in skip]
        if not todo:
            return
        folded = self.folded_supernet(pretrained_state if pretrained_state is not None else self.pretrain())
        for bits, nonzero in todo:
            yield self.finetune_candidate(folded, bits, nonzero)

    # -- training loop

    def _batches(self, rng: np.random.Generator, steps: int,
                 batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return training_batches(self.dataset, rng, steps, batch_size, self.device)

    def _train(self, model, batches, optimizer, schedule, total_steps: int, description: str,
               before_step=lambda step: None) -> None:
        model.train()
        progress = tqdm(batches, total=total_steps, desc=description, leave=False, disable=True if self.quiet else None)
        for step, (images, labels) in enumerate(progress):
            before_step(step)
            training_step(model, optimizer, schedule, images, labels, progress, step)
        progress.close()


def training_step(model, optimizer, schedule, images, labels, progress, step: int) -> None:
    """One cross-entropy step; the loss shows on the progress bar every 20 steps."""
    loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()
    if step % 20 == 0:
        progress.set_postfix(loss=f"{loss.item():.3f}")


def training_batches(dataset: Dataset, rng: np.random.Generator, steps: int, batch_size: int,
                     device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` shuffled batches, reshuffling at every pass over the training set (last partial batch dropped),
    on ``device`` (default: the CPU)."""
    x, y = dataset.x_train, dataset.y_train
    per_pass = len(x) // batch_size
    if per_pass == 0:
        raise UsageError(f"batch size {batch_size} exceeds the {len(x)} training images; lower it")
    produced = 0
    while produced < steps:
        order = rng.permutation(len(x))
        for index in np.array_split(order[:per_pass * batch_size], per_pass)[:steps - produced]:
            produced += 1
            images, labels = torch.from_numpy(x[index]), torch.from_numpy(y[index])
            yield (images, labels) if device is None else (images.to(device), labels.to(device))


def held_out(dataset: Dataset, images: int) -> tuple[Dataset, Dataset]:
    """The training set split into (training, validation): the last ``images`` training images held out, each
    half as a Dataset whose ``x_train``/``y_train`` are that half."""
    if not 0 < images < len(dataset.x_train):
        raise UsageError(f"validation_images={images} must hold out some of the {len(dataset.x_train)} training "
                         "images and leave some; change it")
    return (dataclasses.replace(dataset, x_train=dataset.x_train[:-images], y_train=dataset.y_train[:-images]),
            dataclasses.replace(dataset, x_train=dataset.x_train[-images:], y_train=dataset.y_train[-images:]))


def pruning_schedule(final: float, anneal_steps: int):
    """Kept fraction at a step: 1 -> ``final`` on Zhu & Gupta's cubic schedule, reaching it at ``anneal_steps``."""

    def keep_at(step: int) -> float:
        if anneal_steps <= 0 or step >= anneal_steps:
            return final
        return final + (1.0 - final) * (1.0 - step / anneal_steps) ** 3

    return keep_at


def scaled_lr_groups(model: GraphNet, relative_lr: float) -> list[dict]:
    """One Adam group per layer with lr proportional to the RMS of its weights.

    Folding BN leaves weight scales 10x apart between layers; Adam's step size ignores scale,
    so a single lr would move small-weight layers far and large-weight layers hardly at all.
    """
    groups = []
    for layer in model.searchable_layers():
        scale = float(layer.theta.detach().square().mean().sqrt())
        groups.append({"params": [layer.theta, layer.bias, *layer.ranges.values()], "lr": relative_lr * scale})
    return groups

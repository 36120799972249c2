"""The UDC search (paper 001 Alg. 2, Sec. 4; DESIGN.md section 3) and vanilla DNAS as a setting of it.

Per layer: a bitwidth and a nonzero-fraction decision; per width group (layers whose kept widths
must agree: a layer, the depthwise layer after it, the members of a residual chain): a width
decision; per skippable residual block: block vs identity. After a float pretraining (BN folded) the
search warms theta up with pi frozen at uniform, then learns pi and theta together on
L_task + lambda * L_E, where L_E = mean_s |E(z_s) - e*| / e* over S Monte-Carlo samples that share
one step (the batch is split into S groups). Afterwards the argmax configuration gamma(pi) is
checked exactly against the budget, finetuned in three stages and emitted as a candidate.
"""

from __future__ import annotations

import copy
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from harness.candidate import Candidate
from harness.data import Dataset
from harness.errors import UsageError
from search import cost
from search.relaxation import Decision, exponential, linear, mixed_sample, project, ste_top_kappa
from search.space import Add, GraphNet, SearchableLayer, build_torch, make_supernet, to_candidate
from search.strategy.finetune import finetune
from search.strategy.uniform import MASK_INTERVAL, UniformCompression, evaluate, scaled_lr_groups, training_batches

# Step counts are for one MC sample: with S samples the search runs search_steps / S steps of
# S * batch_size images, so S changes how the data is used, not how much.
# UDC_QUICK: Fashion-MNIST, MBV2-style supernet, 2 CPU cores, about 2-3 minutes. The short schedule
# needs a faster pi than the paper's 1e-3 to move the argmax at all.
UDC_QUICK = {
    "supernet": "mbv2", "bit_options": [8, 6, 4, 3, 2], "nonzero_options": [1.0, 0.7, 0.5, 0.35, 0.2],
    "width_options": [1.0, 0.75, 0.5, 0.25], "search_depth": True,
    "pretrain_epochs": 0.5, "pretrain_lr": 4e-3, "pretrain_batch_size": 128,
    "warmup_steps": 160, "search_steps": 480, "batch_size": 64, "samples": 2,
    "theta_lr": 1e-2, "pi_lr": 0.1, "size_weight": 20.0,
    "tau": [0.66, 0.1], "xi": [0.1, 1.0], "vartheta": [0.0, 0.5],
    "projection": True, "rejection": True, "size_estimate": "samples",
    "kappa_bits": 2, "kappa_nonzero": 2, "kappa_width": None,
    "finetune_steps": 480, "finetune_batch_size": 64, "finetune_lr": 2e-2, "stage_fractions": [0.35, 0.4, 0.25],
    "quant_noise": 0.5, "qhat": True, "compare_number_format": True, "seed": 0,
    "lambda_sweep": [], "repair": True, "random_trials": 4, "validation_images": 2000,
}
UDC_FULL = {
    **UDC_QUICK, "pretrain_epochs": 15, "warmup_steps": 4000, "search_steps": 16000, "samples": 4,
    "pi_lr": 1e-3, "finetune_steps": 12000, "finetune_lr": 1e-2,
}
# Vanilla DNAS (eq. 6): the penalty on the size at the expected options under pi, plain Gumbel-softmax.
DNAS_SETTINGS = {"projection": False, "rejection": False, "size_estimate": "expected"}
SIZE_ESTIMATES = ("samples", "expected")
OP_OPTIONS = (1.0, 0.0)  # block kept, identity: the expected option is the block's gate


class BudgetWarning(UserWarning):
    """The searched configuration misses its budget, or the budget does not constrain the space."""


def merged_settings(settings: dict | None, base: dict = UDC_QUICK) -> dict:
    """``base`` updated with ``settings``; unknown names, wrong types and inconsistent schedules are
    UsageErrors naming the setting."""
    merged = checked_settings(settings, base)
    _check_consistency(merged)
    return merged


def checked_settings(settings: dict | None, base: dict) -> dict:
    """``base`` updated with ``settings`` after checking every name is known and every type matches."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(base))
    if unknown:
        raise UsageError(f"unknown search setting(s) {', '.join(unknown)}; known: {', '.join(sorted(base))}")
    for key, value in settings.items():
        if not _same_kind(key, value, base[key]):
            raise UsageError(f"search setting {key} = {value!r} has the wrong type; expected one like {base[key]!r}")
    return {**base, **settings}


def _same_kind(key: str, value, default) -> bool:
    if key.startswith("kappa_"):  # None means "all options"
        return value is None or (isinstance(value, int) and not isinstance(value, bool))
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and (isinstance(default, float) or isinstance(value, int))
    if isinstance(default, list):
        return isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    return isinstance(value, type(default))


def _check_consistency(s: dict) -> None:
    def fail(message: str):
        raise UsageError(f"inconsistent search settings: {message}")

    if s["samples"] < 1 or s["search_steps"] < s["samples"]:
        fail(f"samples must be >= 1 and <= search_steps, got samples={s['samples']}, search_steps={s['search_steps']}")
    if s["warmup_steps"] < 0 or s["finetune_steps"] < 1:
        fail("warmup_steps must be >= 0 and finetune_steps >= 1")
    if s["size_estimate"] not in SIZE_ESTIMATES:
        fail(f"size_estimate must be one of {', '.join(SIZE_ESTIMATES)}, got {s['size_estimate']!r}")
    bad_bits = [b for b in s["bit_options"] if not (isinstance(b, int) and 1 <= b <= 8)]
    if bad_bits or not s["bit_options"]:
        fail(f"bit_options must be integers in 1..8 (Ethos-U deploys int8), got {s['bit_options']}")
    for key in ("nonzero_options", "width_options"):
        if not s[key] or any(not 0.0 < v <= 1.0 for v in s[key]) or 1.0 not in s[key]:
            fail(f"{key} must be fractions in (0, 1] including 1.0, got {s[key]}")
    schedules = {"tau": (0.0, None), "xi": (0.0, 1.0), "vartheta": (0.0, 1.0)}
    for key, (low, high) in schedules.items():
        values = s[key]
        if len(values) != 2 or any(v < low or (high is not None and v > high) for v in values):
            fail(f"{key} is a [start, end] schedule with values in [{low}, {high if high is not None else 'inf'}], "
                 f"got {values}")
    if min(s["tau"]) <= 0.0 or s["tau"][1] > s["tau"][0]:
        fail(f"tau must anneal downwards from a positive start, got {s['tau']}")
    if s["vartheta"][0] >= 1.0 or s["vartheta"][1] >= 1.0:
        fail(f"vartheta must stay below 1 (at 1 every sample is rejection-sampled), got {s['vartheta']}")
    fractions = s["stage_fractions"]
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        fail(f"stage_fractions are three non-negative fractions summing to 1, got {fractions}")
    if any(w <= 0 for w in s["lambda_sweep"]) or s["size_weight"] <= 0:
        fail(f"size_weight and every lambda_sweep value must be positive, got {s['size_weight']}, {s['lambda_sweep']}")
    for kind in ("bits", "nonzero", "width"):
        kappa = s[f"kappa_{kind}"]
        if kappa is not None and kappa < 1:
            fail(f"kappa_{kind} must be >= 1 (or absent for all options), got {kappa}")
    if s["random_trials"] < 1:
        fail(f"random_trials must be >= 1, got {s['random_trials']}")
    if not 0.0 <= s["quant_noise"] <= 1.0:
        fail(f"quant_noise is a probability, got {s['quant_noise']}")


# ---------------------------------------------------------------- budgets and exact costs


class Budget:
    """A hard budget on the compressed size (bits) or on MACs, with exact and relaxed costs of a supernet."""

    def __init__(self, model: GraphNet, budget_bytes: float | None, macs: int | None):
        if (budget_bytes is None) == (macs is None):
            raise UsageError("give exactly one budget: a size in bytes or a MAC count")
        if (budget_bytes if macs is None else macs) <= 0:
            raise UsageError("the budget must be positive")
        self.kind = "size" if macs is None else "macs"
        self.target = 8.0 * budget_bytes if self.kind == "size" else float(macs)
        self.budget_bytes, self.macs = budget_bytes, macs
        self.sizes = model.output_sizes()

    def describe(self, value: float) -> str:
        return f"{value / 8:.0f} bytes" if self.kind == "size" else f"{value:.0f} MACs"

    def layer_cost(self, layer: SearchableLayer, name: str, kept_in: int) -> float:
        """The exact cost of a layer at its selected options, reading ``kept_in`` channels."""
        kept_out = kept_in if layer.op == "dwconv" else layer.kept_out_channels()
        height, width = self.sizes[name]
        if self.kind == "macs":
            return cost.layer_macs(layer.op, getattr(layer, "kernel", 1), kept_in, kept_out, height, width)
        per_output = layer.theta[0].numel() * (1 if layer.op == "dwconv" else kept_in / layer.in_channels)
        return cost.layer_size_bits(round(kept_out * per_output), layer.nonzero, layer.bits or 32)

    def exact(self, model: GraphNet) -> float:
        """The cost of the selected configuration (skipped blocks cost nothing)."""
        kept = {"input": model.input_shape[2]}
        inactive, total = model.inactive_layers(), 0.0
        for name, layer in model.layers.items():
            source = model.sources[name][0]
            if name in inactive:
                continue
            if isinstance(layer, SearchableLayer):
                total += self.layer_cost(layer, name, kept[source])
                kept[name] = kept[source] if layer.op == "dwconv" else layer.kept_out_channels()
            else:
                kept[name] = kept[source]
        return total

    def full_macs(self, layer: SearchableLayer, name: str) -> int:
        height, width = self.sizes[name]
        return cost.layer_macs(layer.op, getattr(layer, "kernel", 1), layer.in_channels, layer.out_channels,
                               height, width)


def select_configuration(model: GraphNet, config: dict) -> None:
    """Select ``config`` = {"layers": {name: {bits, nonzero, width}}, "skipped": [block, ...]}."""
    for name, choice in config["layers"].items():
        model.layers[name].select(**choice)
    for block in model.blocks:
        model.skip_block(block, block in config["skipped"])


def extreme_configuration(model: GraphNet, budget: Budget, smallest: bool) -> dict:
    """The smallest (every width at its minimum, every block skipped, the cheapest bits and sparsity) or
    largest configuration of the space; the cost is monotone in every option, so it is the extreme."""
    pick = min if smallest else max
    layers = {}
    for name, layer in model.layers.items():
        if not isinstance(layer, SearchableLayer):
            continue
        if budget.kind == "size":
            bits, nonzero = pick(((b, s) for b in layer.bit_options for s in layer.nonzero_options),
                                 key=lambda o: cost.layer_size_bits(1, o[1], o[0]))
        else:
            bits, nonzero = layer.bit_options[0], 1.0
        layers[name] = {"bits": bits, "nonzero": nonzero, "width": pick(layer.width_options)}
    return {"layers": layers, "skipped": list(model.blocks) if smallest else []}


def _shared_width_options(model: GraphNet, keys: dict) -> dict[str, tuple[float, ...]]:
    options = {}
    for name, layer in model.layers.items():
        key = keys[name]
        if isinstance(layer, SearchableLayer) and key is not None:
            if options.setdefault(key, layer.width_options) != layer.width_options:
                raise ValueError(f"{name}: width options {layer.width_options} differ from its group's {options[key]}")
    return options


# ---------------------------------------------------------------- the search


def pretrain_key(settings: dict) -> dict:
    """The settings the pretrained supernet depends on: a cache key for ``pretrain_state``."""
    keys = ("supernet", "bit_options", "nonzero_options", "pretrain_epochs", "pretrain_lr", "pretrain_batch_size", "seed")
    return {key: settings[key] for key in keys}


def pretrain_state(dataset: Dataset, settings: dict, quiet: bool = False) -> dict[str, torch.Tensor]:
    """The float supernet trained with BatchNorm, folded: where every search starts."""
    s = settings
    return UniformCompression(
        dataset, s["supernet"], bits=s["bit_options"], nonzero=s["nonzero_options"], pretrain_epochs=s["pretrain_epochs"],
        batch_size=s["pretrain_batch_size"], lr=s["pretrain_lr"], seed=s["seed"], quiet=quiet).pretrain()


class UDCSearch:
    """UDC (or vanilla DNAS with ``vanilla=True``) under a size budget in bytes or a MAC budget.

    ``run()`` pretrains (unless given ``pretrained``, a state from ``pretrain_state``), searches,
    checks the argmax configuration against the budget (repairing it loudly if it misses), finetunes
    it and returns the candidate; ``search()`` alone returns the searched supernet with the argmax
    selected. Inside a ``torch.distributed`` process group the S Monte-Carlo samples of each step
    are spread over the processes and the gradients averaged, so every process takes the same steps.
    """

    extra_defaults: dict = {}  # a strategy built on this one adds its own settings here

    def __init__(self, dataset: Dataset, budget_bytes: float | None = None, macs: int | None = None,
                 settings: dict | None = None, vanilla: bool = False, quiet: bool = False,
                 pretrained: dict[str, torch.Tensor] | None = None):
        self.settings = merged_settings(settings, {**UDC_QUICK, **self.extra_defaults})
        if vanilla:
            self.settings.update(DNAS_SETTINGS)
        self.strategy = "dnas" if vanilla else "udc"
        self.dataset, self.quiet, self.pretrained = dataset, quiet, pretrained
        self.model = self._folded_supernet(pretrained=False)
        self.budget = Budget(self.model, budget_bytes, macs)
        self.minimum, self.maximum = self.cost_range(self.model)
        self.check_budget()
        self.timings: dict[str, float] = {}
        self.rank, self.world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            self.rank, self.world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if self.settings["samples"] % self.world:
            raise UsageError(f"samples={self.settings['samples']} must be a multiple of the {self.world} processes")

    # -- setup

    def _folded_supernet(self, pretrained: bool) -> GraphNet:
        s = self.settings
        model = make_supernet(s["supernet"], self.dataset.input_shape, self.dataset.num_classes, batchnorm=False,
                              bit_options=s["bit_options"], nonzero_options=s["nonzero_options"],
                              width_options=s["width_options"])
        if not s["search_depth"]:
            model.blocks.clear()
        if pretrained:
            if self.pretrained is None:
                started = time.perf_counter()
                self.pretrained = pretrain_state(self.dataset, s, self.quiet or self.rank > 0)
                self.timings["pretrain_s"] = time.perf_counter() - started
            model.load_state_dict(self.pretrained)
        return model

    def cost_range(self, model: GraphNet) -> tuple[float, float]:
        results = []
        for smallest in (True, False):
            select_configuration(model, extreme_configuration(model, self.budget, smallest))
            results.append(self.budget.exact(model))
        select_configuration(model, {"layers": {}, "skipped": []})
        return results[0], results[1]

    def check_budget(self) -> None:
        if self.budget.target < self.minimum:
            raise UsageError(
                f"budget {self.budget.describe(self.budget.target)} is below the smallest configuration of the "
                f"{self.settings['supernet']} space, {self.budget.describe(self.minimum)}; raise the budget to at "
                f"least that or add smaller options")
        if self.budget.target >= self.maximum:
            warnings.warn(f"budget {self.budget.describe(self.budget.target)} is at or above the largest "
                          f"configuration ({self.budget.describe(self.maximum)}): the search is unconstrained",
                          BudgetWarning, stacklevel=3)

    def _build_decisions(self, model: GraphNet) -> None:
        self.width_keys = model.width_keys()
        width_options = _shared_width_options(model, self.width_keys)
        decisions = {}
        for name, layer in model.layers.items():
            if isinstance(layer, SearchableLayer):
                if len(layer.bit_options) > 1:
                    decisions[f"{name}:bits"] = Decision(layer.bit_options)
                if len(layer.nonzero_options) > 1:
                    decisions[f"{name}:nonzero"] = Decision(layer.nonzero_options)
        for key, options in width_options.items():
            decisions[f"{key}:width"] = Decision(options)
        for block in model.blocks:
            decisions[f"{block}:op"] = Decision(OP_OPTIONS)
        self.decisions = torch.nn.ModuleDict(decisions)
        self.block_of = model.block_of()
        self.sampling_groups: dict[tuple[int, int], list[str]] = {}
        for key, decision in decisions.items():
            options = len(decision.options)
            self.sampling_groups.setdefault((options, self._kappa(key, options)), []).append(key)

    def _kappa(self, key: str, options: int) -> int:
        kind = key.rsplit(":", 1)[1]
        kappa = self.settings.get(f"kappa_{kind}")
        return options if kappa is None else kappa

    # -- one step

    def sample(self, progress: float, frozen: bool, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """z per decision, [S', K] for this process's S' = S / processes samples: mixed z-hat / z-tilde
        (z-tilde w.p. vartheta), STE top-kappa forward."""
        s = self.settings
        tau = exponential(*s["tau"], progress)
        vartheta = linear(*s["vartheta"], progress) if s["rejection"] and not frozen else 0.0
        samples = {}
        for (_, kappa), keys in self.sampling_groups.items():  # one batched draw per (K, kappa)
            log_pi = torch.stack([self.decisions[key].logits for key in keys])
            z = mixed_sample(log_pi.detach() if frozen else log_pi, tau, s["samples"] // self.world, vartheta, generator)
            z = ste_top_kappa(z, kappa)
            samples.update((key, z[:, index]) for index, key in enumerate(keys))
        return samples

    def relax(self, model: GraphNet, z: dict[str, torch.Tensor]) -> None:
        choices, gates = {}, {}
        for name, layer in model.layers.items():
            if isinstance(layer, SearchableLayer):
                choice = {axis: z[f"{name}:{axis}"] for axis in ("bits", "nonzero") if f"{name}:{axis}" in z}
                width_key = f"{self.width_keys[name]}:width"
                if width_key in z:
                    choice["width"] = z[width_key]
                choices[name] = choice
            elif isinstance(layer, Add) and f"{name}:op" in z:
                gates[name] = self.decisions[f"{name}:op"].expected(z[f"{name}:op"])
        model.relax(choices, gates)

    def relaxed_cost(self, model: GraphNet, z: dict[str, torch.Tensor]) -> torch.Tensor:
        """E({z}) per sample, [S]: the cost model at the expected options sum_k z[k] option_k."""

        def expected(key: str | None, default: float) -> torch.Tensor | float:
            return self.decisions[key].expected(z[key]) if key in z else default

        total = 0.0
        for name, layer in model.layers.items():
            if not isinstance(layer, SearchableLayer):
                continue
            source_key = self.width_keys[model.sources[name][0]]
            width_in = expected(f"{source_key}:width", 1.0)
            width_out = expected(f"{self.width_keys[name]}:width", 1.0)
            if layer.op == "dwconv":
                width_in = 1.0  # its channels are its input's: width_out already counts them
            if self.budget.kind == "size":
                layer_cost = cost.relaxed_layer_size_bits(
                    layer.theta.numel(), expected(f"{name}:nonzero", layer.nonzero),
                    expected(f"{name}:bits", layer.bits or 32), width_out, width_in)
            else:
                layer_cost = cost.relaxed_macs(self.budget.full_macs(layer, name), width_out, width_in)
            if name in self.block_of:
                layer_cost = layer_cost * expected(f"{self.block_of[name]}:op", 1.0)
            total = total + layer_cost
        return torch.as_tensor(total).reshape(-1)

    @torch.no_grad()
    def project(self, xi: float) -> None:
        """pi <- P_S(pi) for every decision, all in one batched bisection."""
        decisions = list(self.decisions.values())
        for decision, projected in zip(decisions, project([d.probs() for d in decisions], xi)):
            decision.logits.copy_(projected.clamp_min(torch.finfo(projected.dtype).tiny).log())

    def expected_z(self) -> dict[str, torch.Tensor]:
        """pi itself as a single 'sample': the expected options of eq. 6 (vanilla DNAS)."""
        return {key: decision.probs().unsqueeze(0) for key, decision in self.decisions.items()}

    def objective(self, model: GraphNet, z: dict[str, torch.Tensor], task: torch.Tensor, phase: float,
                  size_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 7: L_task + lambda * E|E(z) - e*| / e*; returns the loss and the relaxed costs E(z)."""
        relaxed = self.relaxed_cost(model, z)
        return task + size_weight * cost.size_penalty(relaxed, self.budget.target), relaxed

    def _average_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """All processes end the step with the mean gradient over all S samples (one all-reduce)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        offset = 0
        for parameter, grad in zip(parameters, grads):
            parameter.grad = flat[offset:offset + grad.numel()].view_as(grad)
            offset += grad.numel()

    # -- the search

    def search(self) -> GraphNet:
        """Search with ``size_weight``, or once per ``lambda_sweep`` value keeping the best (the
        lambda tuning UDC's relative penalty avoids; Table 3's ablation); the argmax is selected."""
        sweep = self.settings["lambda_sweep"]
        if not sweep:
            return self._search_once(self.settings["size_weight"])
        tried = []
        for size_weight in sweep:
            model = self._search_once(size_weight)
            exact = self.budget.exact(model)
            recent = [h["task"] for h in self.history[-max(1, len(self.history) // 5):]]
            tried.append({"lambda": size_weight, "cost": exact, "met": exact <= self.budget.target,
                          "task": float(np.mean(recent)), "state": (model, self.decisions, self.history)})
        met = [t for t in tried if t["met"]]
        best = min(met, key=lambda t: t["task"]) if met else min(tried, key=lambda t: t["cost"])
        model, self.decisions, self.history = best["state"]
        self.lambda_sweep = [{k: t[k] for k in ("lambda", "cost", "met", "task")} | {"chosen": t is best}
                             for t in tried]
        return model

    def _search_once(self, size_weight: float) -> GraphNet:
        s = self.settings
        model = self._folded_supernet(pretrained=True)
        started = time.perf_counter()
        self._build_decisions(model)
        for layer in model.searchable_layers():
            layer.init_option_ranges()
        torch.manual_seed(s["seed"])
        rng = np.random.default_rng(s["seed"])
        # Each process draws its own Gumbel noise; data and everything else are shared.
        generator = torch.Generator().manual_seed(s["seed"] + 7919 * self.rank)
        samples, share = s["samples"], s["samples"] // self.world
        warmup_steps, search_steps = s["warmup_steps"] // samples, s["search_steps"] // samples
        total = warmup_steps + search_steps
        # foreach: one multi-tensor update instead of ~10 small ops per parameter (a search has hundreds)
        theta_optimizer = torch.optim.Adam(scaled_lr_groups(model, s["theta_lr"]), foreach=True)
        theta_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(theta_optimizer, T_max=max(1, total))
        pi_optimizer = torch.optim.Adam(self.decisions.parameters(), lr=s["pi_lr"], foreach=True)
        parameters = [p for p in model.parameters() if p.requires_grad] + list(self.decisions.parameters())
        batches = training_batches(self.dataset, rng, total, s["batch_size"] * samples)
        progress = tqdm(batches, total=total, desc=f"{self.strategy} search", leave=False,
                        disable=True if self.quiet or self.rank > 0 else None)
        model.train()
        self.history = []
        for step, (images, labels) in enumerate(progress):
            if self.world > 1:  # this process's S' samples see their S' groups of the batch
                group = slice(self.rank * share * s["batch_size"], (self.rank + 1) * share * s["batch_size"])
                images, labels = images[group], labels[group]
            warming_up = step < warmup_steps
            # Warm-up anneals tau over its own span, as appendix E does.
            phase = step / max(1, warmup_steps) if warming_up else (step - warmup_steps) / max(1, search_steps)
            if step % MASK_INTERVAL == 0:
                for layer in model.searchable_layers():
                    layer.refresh_option_masks()
            z = self.sample(phase, warming_up, generator)
            self.relax(model, z)
            task = F.cross_entropy(model(images), labels)
            loss, relaxed = task, None
            if not warming_up:
                estimate = z if s["size_estimate"] == "samples" else self.expected_z()
                loss, relaxed = self.objective(model, estimate, task, phase, size_weight)
            theta_optimizer.zero_grad(set_to_none=True)
            pi_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.world > 1:
                self._average_gradients(parameters)
            theta_optimizer.step()
            theta_schedule.step()
            if not warming_up:
                pi_optimizer.step()
                if s["projection"]:
                    self.project(linear(*s["xi"], phase))
            if step % 20 == 0:
                progress.set_postfix(task=f"{task.item():.3f}", loss=f"{loss.item():.3f}")
                self.history.append({"step": step, "task": task.item(), "loss": loss.item(),
                                     "relaxed_cost": None if relaxed is None else relaxed.mean().item()})
        progress.close()
        model.relax()
        select_configuration(model, self.argmax_configuration(model))
        self.timings["search_s"] = self.timings.get("search_s", 0.0) + time.perf_counter() - started
        return model

    def argmax_configuration(self, model: GraphNet) -> dict:
        """gamma(pi): every decision at its most likely option."""
        layers = {}
        for name, layer in model.layers.items():
            if isinstance(layer, SearchableLayer):
                choice = {}
                for axis, default in (("bits", layer.bit_options[0]), ("nonzero", 1.0)):
                    key = f"{name}:{axis}"
                    choice[axis] = self.decisions[key].argmax_option() if key in self.decisions else default
                width_key = f"{self.width_keys[name]}:width"
                choice["width"] = self.decisions[width_key].argmax_option() if width_key in self.decisions else 1.0
                layers[name] = choice
        skipped = [b for b in model.blocks if self.decisions[f"{b}:op"].argmax_option() == 0.0]
        return {"layers": layers, "skipped": skipped}

    def check_constraint(self, model: GraphNet) -> tuple[float, bool]:
        """The exact cost of the selected configuration and whether it meets the budget; warns if not."""
        exact = self.budget.exact(model)
        met = exact <= self.budget.target
        if not met:
            warnings.warn(f"{self.strategy}: the searched configuration costs {self.budget.describe(exact)}, over "
                          f"the budget of {self.budget.describe(self.budget.target)}: constraint NOT met",
                          BudgetWarning, stacklevel=2)
        return exact, met

    def repair(self, model: GraphNet) -> list[str]:
        """Move the selected configuration down, one decision one option at a time, until it meets the
        budget. Where single moves reach the budget, the one losing the least log-probability is taken
        (so a small overshoot costs a small change, not a skipped block); otherwise the one losing the
        least log-probability per unit of cost saved. The smallest configuration fits (checked at
        construction), so this ends."""
        config = self.argmax_configuration(model)
        moves, exact = [], self.budget.exact(model)
        while exact > self.budget.target:
            options = []  # (meets the budget, log-probability lost, cost saved, move, configuration)
            for key, decision in self.decisions.items():
                moved = cheaper(config, key, decision.options, self.width_keys)
                if moved is None:
                    continue
                option_from, option_to, candidate_config = moved
                select_configuration(model, candidate_config)
                after = self.budget.exact(model)
                if after >= exact:
                    continue
                log_pi = decision.probs().detach().clamp_min(1e-12).log()
                lost = float(log_pi[decision.options.index(option_from)] - log_pi[decision.options.index(option_to)])
                options.append((after <= self.budget.target, lost, exact - after,
                                f"{key} {option_from:g}->{option_to:g}", candidate_config))
            if not options:  # nothing left to move: the space cannot meet the budget this way
                break
            finishing = [o for o in options if o[0]]
            best = (min(finishing, key=lambda o: o[1]) if finishing
                    else min(options, key=lambda o: o[1] / o[2]))
            moves.append(best[3])
            config = best[4]
            select_configuration(model, config)
            exact = self.budget.exact(model)
        select_configuration(model, config)
        return moves

    def enforce_budget(self, model: GraphNet) -> dict:
        """Check gamma(pi) against the budget; if it misses, say so loudly and, with ``repair``, move it
        under the budget (still loudly). Returns the budget figures for the candidate's meta."""
        exact_argmax, met_argmax = self.check_constraint(model)
        meta = {"constraint_met_argmax": met_argmax, "repair_moves": []}
        if not met_argmax and self.settings["repair"]:
            meta["repair_moves"] = self.repair(model)
            warnings.warn(f"{self.strategy}: repaired the configuration with {len(meta['repair_moves'])} move(s) "
                          f"to {self.budget.describe(self.budget.exact(model))} ({', '.join(meta['repair_moves'])})",
                          BudgetWarning, stacklevel=2)
        exact = self.budget.exact(model)
        if exact > self.budget.target and self.settings["repair"]:
            warnings.warn(f"{self.strategy}: no configuration of its decisions meets the budget: constraint NOT met",
                          BudgetWarning, stacklevel=2)
        return {**budget_meta(self.budget, exact, exact <= self.budget.target), **meta,
                ("size_bits_gamma_pi" if self.budget.kind == "size" else "macs_gamma_pi"): exact_argmax}

    def run(self) -> Candidate | None:
        """The finetuned candidate; None in every process but the first of a process group."""
        model = self.search()
        if self.rank > 0:
            return None
        budget_figures = self.enforce_budget(model)
        started = time.perf_counter()
        meta = {"strategy": self.strategy, **budget_figures, "processes": self.world,
                "pi": {key: [round(p, 4) for p in d.probs().tolist()] for key, d in self.decisions.items()},
                "search_history": self.history}
        if getattr(self, "lambda_sweep", None):
            meta["lambda_sweep"] = self.lambda_sweep
        self.searched = searched_candidate(model, self.settings, meta)
        candidate = finish_candidate(model, self.dataset, self.settings, self.quiet, meta)
        self.timings["finetune_s"] = time.perf_counter() - started
        candidate.spec["meta"]["timings_s"] = {k: round(v, 1) for k, v in self.timings.items()}
        return candidate


def cheaper(config: dict, key: str, options: tuple, width_keys: dict, up: bool = False
            ) -> tuple[float, float, dict] | None:
    """(from, to, ``config`` with decision ``key`` moved one of its ``options`` towards the cheap end, or
    the costly end with ``up``), or None at that end. Keys: ``layer:bits``, ``layer:nonzero``,
    ``group:width``, ``block:op``."""
    target, axis = key.rsplit(":", 1)
    if axis == "op":
        if (target in config["skipped"]) != up:
            return None
        skipped = [b for b in config["skipped"] if b != target] if up else [*config["skipped"], target]
        return (0.0, 1.0, {**config, "skipped": skipped}) if up else (1.0, 0.0, {**config, "skipped": skipped})
    names = [n for n, key_of in width_keys.items() if key_of == target and n in config["layers"]] \
        if axis == "width" else [target]
    current = config["layers"][names[0]][axis]
    further = [o for o in options if (o > current if up else o < current)]
    if not further:
        return None
    option = min(further) if up else max(further)
    layers = {**config["layers"], **{n: {**config["layers"][n], axis: option} for n in names}}
    return current, option, {**config, "layers": layers}


def searched_name(strategy: str, supernet: str, budget_bytes: float | None, macs: int | None) -> str:
    """e.g. ``udc-mbv2-24kB`` or ``udc-mbv2-2000000macs``."""
    return f"{strategy}-{supernet}-" + (f"{budget_bytes / 1000:g}kB" if budget_bytes is not None else f"{macs}macs")


def budget_meta(budget: Budget, exact: float, met: bool) -> dict:
    """``size_bits``/``macs``: the exact cost of the emitted configuration."""
    return {"budget_bytes": budget.budget_bytes, "budget_macs": budget.macs, "constraint_met": met,
            "size_bits" if budget.kind == "size" else "macs": exact}


def decisions_meta(model: GraphNet) -> dict:
    inactive = model.inactive_layers()
    return {name: {"bits": layer.bits, "nonzero": layer.nonzero, "width": layer.width,
                   "op": "identity" if name in inactive else layer.op}
            for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)}


def searched_candidate(model: GraphNet, settings: dict, meta: dict) -> Candidate | None:
    """The configuration as searched, before finetuning (weights Q(theta) * m at the selected options);
    None where a layer's search-time range leaves no nonzero weight, which finetuning repairs."""
    name = searched_name(meta["strategy"], settings["supernet"], meta.get("budget_bytes"), meta.get("budget_macs"))
    model = copy.deepcopy(model)
    model.refresh_masks()
    try:
        return to_candidate(model, f"{name}-searched", {**meta, "stage": "searched", "decisions": decisions_meta(model)})
    except ValueError:
        return None


def finish_candidate(model: GraphNet, dataset: Dataset, settings: dict, quiet: bool, meta: dict) -> Candidate:
    """Finetune the selected configuration in three stages and emit it; with ``compare_number_format`` a copy
    is also finetuned with the other number format, for the weight-norm comparison of Fig. 3."""
    s = settings

    def tune(network: GraphNet, qhat: bool) -> dict:
        return finetune(network, dataset, s["finetune_steps"], s["finetune_batch_size"], s["finetune_lr"],
                        s["stage_fractions"], s["quant_noise"], qhat, s["seed"], quiet,
                        f"finetune ({'Q-hat' if qhat else 'Q'})")

    other = copy.deepcopy(model) if s["compare_number_format"] else None
    norms = tune(model, s["qhat"])
    label = "qhat" if s["qhat"] else "plain"
    weight_norm = {"before": norms["before"], f"after_{label}": norms["after"], f"trajectory_{label}": norms["trajectory"]}
    if other is not None:
        other_label = "plain" if s["qhat"] else "qhat"
        other_norms = tune(other, not s["qhat"])
        weight_norm.update({f"after_{other_label}": other_norms["after"],
                            f"trajectory_{other_label}": other_norms["trajectory"],
                            f"accuracy_{other_label}": evaluate(other, dataset.x_test, dataset.y_test)})
    name = searched_name(meta["strategy"], s["supernet"], meta.get("budget_bytes"), meta.get("budget_macs"))
    full_meta = {**meta, "supernet": s["supernet"], "dataset": dataset.name, "decisions": decisions_meta(model),
                 "weight_norm": weight_norm, "search": dict(s)}
    candidate = to_candidate(model, name, full_meta)
    candidate.spec["meta"]["accuracy_float"] = evaluate(build_torch(candidate), dataset.x_test, dataset.y_test)
    return candidate

"""Zur et al. on the UDC space: a distribution over configurations whose parameters alpha
are learned with the score-function gradient of eq. 3, while the shared weights train on sampled
configurations as usual.

Per layer, the weight bitwidth is a multinomial decision (eq. 3 with C = 1: the candidate format and
per-tensor int8 export hold one b-bit grid per layer, so filters of one layer cannot mix bitwidths);
per width group, the number of kept filters is 1 + Binomial(C - 1, sigmoid(alpha)) (eq. 6), the
slimmable-network form of the paper. Sparsity and depth are not in its space. The loss of a
configuration is L_acc + lambda * sigma(size / e*), sigma(r) = max(0, r - 1): complexity is measured
with the harness's size model so the result competes under the same budget; its BOPs (appendix F,
8-bit activations) are recorded beside it.

One search step samples |S| configurations, takes one weight step on them (each on its share of the batch)
and one alpha step on their losses. An iteration of the paper's Alg. C.3 is ``zur_reset_interval`` such
steps: with ``weight_reset`` the weights omega are reset to the pretrained supernet's (the search's starting
weights, each bitwidth's range refitted to them as at the start) at the start of every iteration but the
first, with a fresh optimizer, and training continues from there; alpha is kept. That is C.3 with
k_omega = 1 ("we reinitialize omega after each iteration"); resetting every k_omega iterations is a
k_omega times longer interval. Two differences stay: omega restarts from the pretrained weights, not from
random values, and it trains interleaved with the alpha steps instead of for t_omega epochs before them.
The found configuration is finetuned from the pretrained weights, reloaded once more after the search.

With ``zur_configuration_steps`` > 0 (the paper's "Basic search method": the current weights duplicated and
each sampled configuration finetuned before its loss is evaluated) each configuration's task loss is taken
after that many Adam steps on a copy of the current weights (saved and restored in place, so the shared
weights and their optimizer are untouched); the search then costs |S| * zur_configuration_steps extra
training steps a step, on batches of ``batch_size`` images. At 0 (default) the configurations' losses on
the shared weights are used directly.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from search import cost
from search.decisions import DecisionSpace, decision_key
from search.settings import ZUR_DEFAULTS
from search.space import GraphNet, SearchableLayer, kept_count
from search.strategy.budget import select_configuration
from search.strategy.udc import UDCSearch
from search.strategy.uniform import scaled_lr_groups, training_batches

FILTER_GRID = 16  # kept filters are rounded up to sixteenths of a layer (the width options)
ACTIVATION_BITS = 8  # Ethos-U55 runs int8 activations


def multinomial_score(counts: torch.Tensor, total: int, probs: torch.Tensor) -> torch.Tensor:
    """d log p(a | alpha) / d alpha for a ~ Multinomial(C, softmax(alpha)): a - C * softmax(alpha) (Lemma 2)."""
    return counts - total * probs


def binomial_score(count: torch.Tensor, trials: int, probability: torch.Tensor) -> torch.Tensor:
    """d log p(A | alpha) / d alpha for A ~ Binomial(C - 1, sigmoid(alpha)): A - (C - 1) sigmoid(alpha) (Lemma 6)."""
    return count - trials * probability


def score_function_gradient(losses: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Eq. 3: mean over the sampled configurations of L(a) * score(a); losses [|S|], scores [|S|, ...]."""
    return (losses.view(-1, *([1] * (scores.dim() - 1))) * scores).mean(dim=0)


class ZurSearch(UDCSearch):
    """Zur et al.'s search; shares UDC's supernet, budget check, repair and finetuning."""

    extra_defaults = ZUR_DEFAULTS

    def __init__(self, dataset, budget_bytes=None, macs=None, settings=None, quiet=False, pretrained=None, **options):
        grid = tuple(k / FILTER_GRID for k in range(1, FILTER_GRID + 1))
        settings = {**(settings or {}), "nonzero_options": [1.0], "width_options": list(grid), "search_depth": False}
        super().__init__(dataset, budget_bytes, macs, settings, quiet=quiet, pretrained=pretrained, **options)
        self.strategy = "zur"

    def _groups(self, model: GraphNet) -> dict[str, int]:
        """Width group -> its filter count C."""
        keys = model.width_keys()
        return {key: model.layers[key].out_channels for key in sorted({k for k in keys.values() if k is not None})}

    def search(self) -> GraphNet:
        s = self.settings
        model = self._folded_supernet(pretrained=True)
        started = time.perf_counter()
        self.width_keys = model.width_keys()
        layers = {name: layer for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)}
        for layer in layers.values():
            layer.init_option_ranges()
        # where the search starts, and where a weight reset returns: the pretrained weights, ranges fitted to them
        self.start_state = {key: value.detach().clone() for key, value in model.state_dict().items()}
        groups = self._groups(model)
        bit_alpha = torch.zeros(len(layers), len(s["bit_options"]), requires_grad=True)
        width_alpha = torch.full((len(groups),), 2.0, requires_grad=True)  # start near full width
        torch.manual_seed(s["seed"])
        rng = np.random.default_rng(s["seed"])
        configurations = s["zur_configurations"]
        steps = (s["warmup_steps"] + s["search_steps"]) // configurations
        theta_optimizer = torch.optim.Adam(scaled_lr_groups(model, s["theta_lr"]), fused=True)
        alpha_optimizer = torch.optim.Adam([bit_alpha, width_alpha], lr=s["zur_alpha_lr"])
        trials = torch.tensor([c - 1 for c in groups.values()], dtype=torch.float32)
        progress = tqdm(training_batches(self.dataset, rng, steps, s["batch_size"] * configurations), total=steps,
                        desc="zur search", leave=False, disable=True if self.quiet else None)
        interval = s["zur_reset_interval"] if s["weight_reset"] else 0
        finetuning = s["zur_configuration_steps"]  # the configurations' own batches, apart from the shared ones
        own_batches = training_batches(self.dataset, np.random.default_rng(s["seed"] + 1),
                                       steps * configurations * finetuning, s["batch_size"]) if finetuning else None
        model.train()
        self.history = []
        for step, (images, labels) in enumerate(progress):
            if interval and step and step % interval == 0:  # a new iteration of Alg. C.3
                self.reset_weights(model, step)
                theta_optimizer = torch.optim.Adam(scaled_lr_groups(model, s["theta_lr"]), fused=True)
            bit_probs, width_probs = torch.softmax(bit_alpha, -1), torch.sigmoid(width_alpha)
            with torch.no_grad():
                bit_counts = F.one_hot(torch.multinomial(bit_probs, configurations, replacement=True).T,
                                       len(s["bit_options"])).float()  # [|S|, layers, K]
                kept = torch.distributions.Binomial(trials, width_probs).sample((configurations,))  # [|S|, groups]
            sampled = [self._configuration(layers, groups, bit_counts[index], kept[index])
                       for index in range(configurations)]
            groups_of_batch = list(zip(images.chunk(configurations), labels.chunk(configurations)))
            finetuned = [self.configuration_loss(model, config, *group, own_batches)
                         for config, group in zip(sampled, groups_of_batch)] if finetuning else None
            theta_optimizer.zero_grad(set_to_none=True)
            losses = []
            for index, (config, (group_images, group_labels)) in enumerate(zip(sampled, groups_of_batch)):
                select_configuration(model, config)
                task = F.cross_entropy(model(group_images), group_labels)
                (task / configurations).backward()
                complexity = self.budget.exact(model) / self.budget.limit
                task_loss = task.item() if finetuned is None else finetuned[index]
                losses.append(task_loss + s["zur_lambda"] * max(0.0, complexity - 1.0))
            theta_optimizer.step()
            losses_t = torch.tensor(losses)
            alpha_optimizer.zero_grad(set_to_none=True)
            bit_alpha.grad = score_function_gradient(losses_t, multinomial_score(bit_counts, 1, bit_probs.detach()))
            width_alpha.grad = score_function_gradient(losses_t, binomial_score(kept, trials, width_probs.detach()))
            alpha_optimizer.step()
            if step % 20 == 0:
                progress.set_postfix(loss=f"{losses_t.mean():.3f}")
                self.history.append({"step": step, "task": float(losses_t.mean()), "loss": float(losses_t.mean()),
                                     "relaxed_cost": None})
        progress.close()
        self._decisions_from(layers, groups, bit_alpha.detach(), width_alpha.detach())
        select_configuration(model, self.argmax_configuration(model))
        if s["weight_reset"]:  # finetune the found configuration from the pretrained weights (docs/papers.md)
            model.load_state_dict(self.pretrained)
        self.timings["search_s"] = time.perf_counter() - started
        return model

    def reset_weights(self, model: GraphNet, step: int) -> None:
        """omega <- the pretrained supernet's weights with the bitwidths' ranges fitted to them, as the search
        started (called at ``step``, the first of a new iteration)."""
        model.load_state_dict(self.start_state)

    def configuration_loss(self, model: GraphNet, config: dict, images: torch.Tensor, labels: torch.Tensor,
                           batches) -> float:
        """The task loss on ``images`` of ``config`` after ``zur_configuration_steps`` Adam steps (on batches
        from ``batches``) on a copy of the current weights; the weights are restored afterwards, so the shared
        weights leave as they came (their gradients are cleared)."""
        s = self.settings
        parameters = list(model.parameters())
        saved = [parameter.detach().clone() for parameter in parameters]
        select_configuration(model, config)
        optimizer = torch.optim.Adam(scaled_lr_groups(model, s["theta_lr"]), fused=True)
        for _ in range(s["zur_configuration_steps"]):
            own_images, own_labels = next(batches)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(own_images), own_labels).backward()
            optimizer.step()
        with torch.no_grad():
            loss = F.cross_entropy(model(images), labels).item()
            torch._foreach_copy_(parameters, saved)
        for parameter in parameters:
            parameter.grad = None
        return loss

    def _configuration(self, layers: dict, groups: dict, bit_counts: torch.Tensor, kept: torch.Tensor) -> dict:
        bits = [self.settings["bit_options"][int(i)] for i in bit_counts.argmax(-1)]
        widths = {key: grid_width(int(k) + 1, channels) for (key, channels), k in zip(groups.items(), kept)}
        return {"layers": {name: {"bits": b, "nonzero": 1.0,
                                  "width": widths[self.width_keys[name]] if self.width_keys[name] else 1.0}
                           for (name, _), b in zip(layers.items(), bits)}, "skipped": []}

    def _decisions_from(self, layers: dict, groups: dict, bit_alpha: torch.Tensor, width_alpha: torch.Tensor) -> None:
        """The learned distributions as UDC decisions, so gamma(pi), the repair and the report work as for
        UDC: bits keep their logits; a width group's logits are the binomial's log-probabilities of the
        filter counts each width option keeps (its mode is the argmax)."""
        grid = tuple(k / FILTER_GRID for k in range(1, FILTER_GRID + 1))
        options, logits = {}, {}
        for (name, _), alpha in zip(layers.items(), bit_alpha):
            options[decision_key(name, "bits")] = tuple(self.settings["bit_options"])
            logits[decision_key(name, "bits")] = alpha
        for (key, channels), alpha in zip(groups.items(), width_alpha):
            binomial = torch.distributions.Binomial(channels - 1, torch.sigmoid(alpha))
            counts = torch.tensor([kept_count(channels, w) - 1 for w in grid], dtype=torch.float32)
            options[decision_key(key, "width")] = grid
            logits[decision_key(key, "width")] = binomial.log_prob(counts.clamp(0, channels - 1))
        self.decisions = DecisionSpace(options).relaxed(logits)

    def bops(self, model: GraphNet) -> float:
        """BOPs of the selected configuration (appendix F) with 8-bit activations."""
        sizes, total = model.output_sizes(), 0.0
        kept = {"input": model.input_shape[2]}
        for name, layer in model.layers.items():
            source = model.sources[name][0]
            if not isinstance(layer, SearchableLayer):
                kept[name] = kept[source]
                continue
            channels_out = kept[source] if layer.op == "dwconv" else layer.kept_out_channels()
            total += cost.layer_bops(getattr(layer, "kernel", 1), {ACTIVATION_BITS: kept[source]},
                                     {layer.bits: channels_out}, *sizes[name], depthwise=layer.op == "dwconv")
            kept[name] = channels_out
        return total

    def enforce_budget(self, model: GraphNet) -> dict:
        return {**super().enforce_budget(model), "bops": self.bops(model)}


def grid_width(filters: int, channels: int) -> float:
    """The smallest width option keeping at least ``filters`` of ``channels``."""
    for k in range(1, FILTER_GRID + 1):
        if kept_count(channels, k / FILTER_GRID) >= filters:
            return k / FILTER_GRID
    return 1.0

"""Every strategy's settings and their checks, without torch: the harness's config loader and CLI
validate a config file against these before anything trains.

``QUICK``/``FULL``: the uniform sweep's training. ``UDC_QUICK``/``UDC_FULL``: the searches' (UDC, vanilla
DNAS as ``DNAS_SETTINGS`` on top, random search and the peers share them); each peer adds its own keys
(``PEER_DEFAULTS``). ``merged_settings`` checks names, types and the consistency of the schedules.
"""

from __future__ import annotations

from core.errors import UsageError
from search import device

# ``device``: where training runs (``search.device``: auto, cpu, cuda or cuda:N).
# ``lr`` is Adam's peak rate for pretraining (one-cycle schedule); ``finetune_lr`` is relative: each
# layer's Adam rate is finetune_lr * RMS(theta), cosine-decayed to 0 (see scaled_lr_groups).
# QUICK: Fashion-MNIST, MBV2-style supernet, 2 CPU cores: pretraining + 9 candidates in about 4 minutes.
QUICK = {"pretrain_epochs": 2, "finetune_steps": 360, "batch_size": 128, "finetune_batch_size": 32, "lr": 4e-3,
         "finetune_lr": 3e-2, "anneal_fraction": 0.5, "device": "auto"}
FULL = {"pretrain_epochs": 15, "finetune_steps": 3000, "batch_size": 128, "finetune_batch_size": 64, "lr": 4e-3,
        "finetune_lr": 1e-2, "anneal_fraction": 0.5, "device": "auto"}

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
    "lambda_sweep": [], "repair": True, "random_trials": 4, "random_protocol": "shared", "validation_images": 2000,
    "mac_compression": False, "device": "auto",
    "optimizer": "adam", "weight_decay": 0.0, "lr_schedule": "one-cosine", "final_lr_fraction": 1e-2,
    "restart_steps": 0, "augment": "none",
}
UDC_FULL = {
    **UDC_QUICK, "pretrain_epochs": 15, "warmup_steps": 4000, "search_steps": 16000, "samples": 4,
    "pi_lr": 1e-3, "finetune_steps": 12000, "finetune_lr": 1e-2,
}
# UDC_PAPER: the UDC paper's CIFAR100 recipe (appendix E), for GPUs (32 MC samples: about 100x UDC_FULL's
# compute). Epochs are CIFAR's 50,000 training images at batch 64 (781 steps an epoch): warm-up 50, search
# 200, finetuning 254 + 60 + 30 (stage 1 with restarts from a 2-epoch cycle, doubling). Bits as far as int8
# deployment allows the paper's {1, 4, 8, 32}; widths and nonzero fractions in 10% steps; no depth search
# (the paper's main results search none). SGD's momentum is assumed (search.strategy.recipe.MOMENTUM).
_EPOCH = 781
_TENTHS = [round(1.0 - k / 10, 1) for k in range(10)]
UDC_PAPER = {
    **UDC_QUICK, "bit_options": [8, 4, 1], "nonzero_options": _TENTHS, "width_options": _TENTHS, "search_depth": False,
    "pretrain_epochs": 15, "warmup_steps": 50 * _EPOCH, "search_steps": 200 * _EPOCH, "batch_size": 64, "samples": 32,
    "theta_lr": 0.1, "pi_lr": 1e-3, "optimizer": "sgd", "weight_decay": 5e-4, "lr_schedule": "per-phase",
    "final_lr_fraction": 1e-3, "finetune_steps": 344 * _EPOCH, "finetune_batch_size": 64, "finetune_lr": 0.1,
    "stage_fractions": [254 / 344, 60 / 344, 30 / 344], "restart_steps": 2 * _EPOCH, "augment": "paper",
}
# Vanilla DNAS (eq. 6): the penalty on the size at the expected options under pi, plain Gumbel-softmax.
DNAS_SETTINGS = {"projection": False, "rejection": False, "size_estimate": "expected"}
SIZE_ESTIMATES = ("samples", "expected")
# How theta trains (search.strategy.recipe): ours, or the paper's SGD, per-phase cosine, flips/crops/cutout.
OPTIMIZERS, LR_SCHEDULES, AUGMENTATIONS = ("adam", "sgd"), ("one-cosine", "per-phase"), ("none", "paper")
# Random search: "shared", its trials share one search's steps and the winner is finetuned as UDC's result
# is; "paper", every trial gets the full finetuning and the best on held-out images is the result (Sec. 6.1).
RANDOM_PROTOCOLS = ("shared", "paper")

# The seed peers' own settings, on top of the searches' (see each peer's module).
ZUR_DEFAULTS = {"zur_configurations": 4, "zur_lambda": 2.0, "zur_alpha_lr": 0.05, "weight_reset": False,
                "zur_reset_interval": 40, "zur_configuration_steps": 0}
# UNAS (App. E.1): pi on L_gen = L_train + lambda_gen (L_val - L_train), lambda_gen 0.5, theta on L_train ("train":
# both on L_train); skip dropout 0.1; a constant temperature 0.4 (unas_tau = 0: the [udc] tau schedule).
UNAS_DEFAULTS = {"unas_latency_fraction": 0.7, "unas_latency_cycles": 0, "unas_lambda_latency": 2.0,
                 "unas_skip_dropout": 0.1, "unas_loss": "generalization", "unas_lambda_gen": 0.5, "unas_tau": 0.4}
UNAS_LOSSES = ("generalization", "train")
# neuralscale_eta: eq. 16's fixed step, relative to the start (search/strategy/neuralscale.py: scale_to_budget).
# The first step takes tau to tau_0 * (1 - eta * (h / t - 1)), h / t the full network's size over the budget, so
# eta * (h / t - 1) must stay below 1 or tau overshoots to nothing and the fixed step never recovers: on the
# MBV2 supernet 0.5 diverged at a 24 KB size bound (h / t = 3.4) and 0.1 at 4 KB (h / t = 20); 0.02 serves
# budgets down to 1/50 of the full network, and the tau update costs no training, so the smaller steps are cheap.
NEURALSCALE_DEFAULTS = {"neuralscale_iterations": 1, "neuralscale_batches": 8, "neuralscale_train_steps": 100,
                        "neuralscale_eta": 0.02, "neuralscale_ranking": "iterative", "neuralscale_from_scratch": False}
NEURALSCALE_RANKINGS = ("iterative", "one-shot")
PEER_DEFAULTS = {"zur": ZUR_DEFAULTS, "unas": UNAS_DEFAULTS, "neuralscale": NEURALSCALE_DEFAULTS}


def checked_peer_settings(peer: str, settings: dict | None) -> dict:
    """``PEER_DEFAULTS[peer]`` updated with ``settings``, names, types and values checked."""
    merged = checked_settings(settings, PEER_DEFAULTS[peer])
    PEER_CHECKS[peer](merged)
    return merged


def check_peers(s: dict) -> None:
    """The value checks of every peer whose settings ``s`` holds (a peer's search merges them into UDC's)."""
    for peer, check in PEER_CHECKS.items():
        if PEER_DEFAULTS[peer].keys() <= s.keys():
            check(s)


def check_zur(s: dict) -> None:
    for key in ("zur_reset_interval", "zur_configuration_steps"):
        if s[key] < 0:
            raise UsageError(f"inconsistent search settings: {key} must be >= 0, got {s[key]}")


def check_neuralscale(s: dict) -> None:
    if s["neuralscale_ranking"] not in NEURALSCALE_RANKINGS:
        raise UsageError(f"search setting neuralscale_ranking = {s['neuralscale_ranking']!r}; choose one of "
                         f"{', '.join(NEURALSCALE_RANKINGS)}")


def check_unas(s: dict) -> None:
    """The values of UNAS's settings; UsageErrors naming the setting."""
    if s["unas_loss"] not in UNAS_LOSSES:
        raise UsageError(f"unas_loss must be one of {', '.join(UNAS_LOSSES)}, got {s['unas_loss']!r}")
    for key in ("unas_lambda_gen", "unas_skip_dropout"):
        if not 0.0 <= s[key] <= 1.0:
            raise UsageError(f"{key} must be in [0, 1], got {s[key]}")
    if s["unas_tau"] < 0.0:
        raise UsageError(f"unas_tau must be a positive constant temperature, or 0 for the [udc] tau schedule, "
                         f"got {s['unas_tau']}")


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
    device.check(s["device"])
    for key, allowed in (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES), ("augment", AUGMENTATIONS)):
        if s[key] not in allowed:
            fail(f"{key} must be one of {', '.join(allowed)}, got {s[key]!r}")
    if not 0.0 <= s["final_lr_fraction"] <= 1.0 or s["weight_decay"] < 0 or s["restart_steps"] < 0:
        fail(f"final_lr_fraction is in [0, 1], weight_decay and restart_steps >= 0, got {s['final_lr_fraction']}, "
             f"{s['weight_decay']}, {s['restart_steps']}")
    if s["random_trials"] < 1:
        fail(f"random_trials must be >= 1, got {s['random_trials']}")
    if s["random_protocol"] not in RANDOM_PROTOCOLS:
        fail(f"random_protocol must be one of {', '.join(RANDOM_PROTOCOLS)}, got {s['random_protocol']!r}")
    check_peers(s)
    if not 0.0 <= s["quant_noise"] <= 1.0:
        fail(f"quant_noise is a probability, got {s['quant_noise']}")


PEER_CHECKS = {"zur": check_zur, "unas": check_unas, "neuralscale": check_neuralscale}

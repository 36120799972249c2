"""The UDC paper's Table 3 ablation (section 6.2) as settings of the UDC search: each row
switches components off. "lambda tuning" means the row needs a sweep over lambda (UDC's relative
penalty with projection does not): it searches once per lambda in {w/10, w, 10w} around the
configured ``size_weight`` w and keeps the best configuration that meets the budget.
"""

from __future__ import annotations

from core.paper import COMPONENTS, TABLE3_ROWS


def row_settings(row: str, settings: dict) -> tuple[dict, bool]:
    """UDC settings for a Table 3 row, from the configured ``settings``, and whether it is vanilla DNAS
    (whose expected-size penalty replaces the sampled one)."""
    rejection, mc_samples, projection, lambda_tuning = TABLE3_ROWS[row]
    weight = settings["size_weight"]
    changed = {"rejection": rejection, "projection": projection,
               "samples": settings["samples"] if mc_samples else 1,
               "lambda_sweep": [weight / 10, weight, weight * 10] if lambda_tuning else []}
    return {**settings, **changed}, row == "vanilla-dnas"


def row_components(row: str) -> dict[str, bool]:
    return dict(zip(COMPONENTS, TABLE3_ROWS[row]))

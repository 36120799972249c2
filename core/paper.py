"""The UDC paper's Table 3 (its ablation): the rows in the paper's order and the components each keeps.

The search runs the rows (``search.strategy.ablation``) and the tables put our results beside the
paper's (``results.tables``); both read the rows from here.
"""

COMPONENTS = ("rejection", "mc_samples", "projection", "lambda_tuning")

# row -> (rejection sampling, multiple MC samples, pi-projection, lambda tuning needed), in the paper's order
TABLE3_ROWS: dict[str, tuple[bool, bool, bool, bool]] = {
    "vanilla-dnas": (False, False, False, True),
    "rejection-mc": (True, True, False, False),
    "mc-projection": (False, True, True, False),
    "projection": (False, False, True, False),
    "mc": (False, True, False, False),
    "rejection-mc-lambda": (True, True, False, True),
    "mc-lambda": (False, True, False, True),
    "full-udc": (True, True, True, False),
}

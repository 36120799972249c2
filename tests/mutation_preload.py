"""A pytest plugin for the mutation run (tox -e mutation; loaded with ``-p tests.mutation_preload`` by
[tool.mutmut] in pyproject.toml): imports up front what the code imports only when it is first used,
and keeps torch to one thread.

mutmut's fork server runs a collect-only pass and then forks one process per mutant, and each of those
would import TensorFlow (seconds), alembic, Vela and the others again. Imported once here, during
that collect pass, they are inherited by every fork. Importing starts no TensorFlow or torch threads,
so the forks may still use both.

The forks run side by side, one per core: torch's own thread pool on top of that spins for cores that
are busy, and costs the search tests half their time. Nothing here changes what a test checks.
"""

import importlib
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

LAZY_IMPORTS = (
    "tensorflow",
    "keras",
    "tflite_micro.runtime",
    "ethosu.vela.vela",
    "constriction",
    "scipy.stats",
    "alembic.command",
    "alembic.config",
    "alembic.migration",
    "alembic.runtime.environment",
    "mako.template",
    "tqdm",
    "results.store",
    "targets.firmware",
    "harness.cli",
    "targets",
)

for _name in LAZY_IMPORTS:
    try:
        importlib.import_module(_name)
    except ImportError:  # an optional part that is not installed is imported where it is used, or skipped
        pass

import torch  # noqa: E402

torch.set_num_threads(1)

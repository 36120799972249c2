"""A pytest plugin for the mutation run (tox -e mutation; loaded with ``-p tests.mutation_preload`` by
[tool.mutmut] in pyproject.toml): imports up front what the code imports only when it is first used.

mutmut's fork server runs a collect-only pass and then forks one process per mutant, and each of those
would import TensorFlow (seconds), alembic, Vela and the others again. Imported once here, during
that collect pass, they are inherited by every fork. Importing starts no TensorFlow or torch threads,
so the forks may still use both. Nothing here changes what a test sees.
"""

import importlib

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
    "harness.firmware",
    "harness.cli",
    "targets",
)

for _name in LAZY_IMPORTS:
    try:
        importlib.import_module(_name)
    except ImportError:  # an optional part that is not installed is imported where it is used, or skipped
        pass

"""The run report: ``report.md`` with its PNGs, and ``report.html`` (the same, self-contained), from
measurement dicts (the store's column names).

- ``cells``: one value to one table cell (units, missing values) and the markdown table;
- ``pareto``: the Pareto front (min Flash, max accuracy), overall and per strategy;
- ``figures``: the plotting primitives (Agg figures, styles, label placement);
- ``plots``: the report's figures;
- ``sections``: accuracy, size, measurements, failures, provenance;
- ``search_sections``: searches under a budget, per-layer decisions, the ablation;
- ``estimates`` and ``history``: Vela's estimates against devices, and metrics over runs;
- ``document``: ``write_report``, which puts the sections together; ``html``: ``write_html``.
"""

from results.report.cells import markdown_table
from results.report.document import write_report
from results.report.html import write_html
from results.report.pareto import pareto_front

__all__ = ["markdown_table", "pareto_front", "write_html", "write_report"]

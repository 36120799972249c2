"""Record dicts to rows and back: values made JSON-safe and coerced to their columns' types, rows read
back as dicts with the store's column names."""

from __future__ import annotations

import datetime as dt
import math
import os
from typing import Any

from sqlalchemy import JSON

from results.schema import MEASUREMENT_COLUMNS, Base, Measurement

ASSIGNED = ("id", "run_id")


def jsonable(value: Any) -> Any:
    """Plain JSON types from what stages hand over (numpy scalars/arrays, tuples, paths, datetimes)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None  # JSON has no NaN/inf
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [jsonable(v) for v in items]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, without importing numpy
        return jsonable(value.tolist())
    return str(value)


def coerce(column: str, value: Any) -> Any:
    """Python values of the column's type; numpy scalars would not bind on sqlite3."""
    if value is None:
        return None
    column_type = Measurement.__table__.columns[column].type
    if isinstance(column_type, JSON):
        return jsonable(value)
    python_type = column_type.python_type
    if python_type is bool:
        return bool(value)
    if python_type is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"measurement column {column!r} takes an integer, got {value!r}")
        return int(value)
    if python_type is float:
        value = float(value)
        return value if math.isfinite(value) else None
    if python_type is str:
        return str(value)
    return value


def row_dict(obj: Base, columns: tuple[str, ...]) -> dict:
    return {name: getattr(obj, name) for name in columns}


def measurement_dict(obj: Measurement) -> dict:
    row = row_dict(obj, MEASUREMENT_COLUMNS)
    row["extra"] = dict(row["extra"] or {})
    return row

"""The results store's tables (SQLAlchemy): runs, measurements and which run measured what, with the
schema revision this code reads and writes."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Double, ForeignKey, Integer, String, Text, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The Alembic revision this code reads and writes (results/migrations/versions); older stores are
# upgraded with 'python -m harness store upgrade'. SCHEMA_VERSION mirrors it in the meta table.
SCHEMA_REVISIONS = ("0001", "0002")
SCHEMA_REVISION = SCHEMA_REVISIONS[-1]
SCHEMA_VERSION = int(SCHEMA_REVISION)
STORE_FILENAME = "results.sqlite"
RUN_STATUSES = ("running", "ok", "failed", "interrupted")
MEASUREMENT_STATUSES = ("ok", "failed")
SQLITE_MAGIC = b"SQLite format 3\x00"
# Long enough to ride out another process's write transaction (a few ms) even on a slow disk.
BUSY_TIMEOUT_MS = 30_000


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset; store naive UTC, return aware)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=dt.timezone.utc)


def _json() -> JSON:
    # Missing values are SQL NULL, not the JSON literal null, so "IS NULL" queries behave.
    return JSON(none_as_null=True)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    command: Mapped[str] = mapped_column(String)
    config: Mapped[Any] = mapped_column(_json(), nullable=True)
    provenance: Mapped[Any] = mapped_column(_json(), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Measurement(Base):
    __tablename__ = "measurements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), nullable=True, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    candidate_hash: Mapped[str | None] = mapped_column(String, index=True)
    candidate_name: Mapped[str | None] = mapped_column(String, index=True)
    strategy: Mapped[str | None] = mapped_column(String)
    target: Mapped[str | None] = mapped_column(String)
    target_settings: Mapped[Any] = mapped_column(_json(), nullable=True)
    settings_key: Mapped[str | None] = mapped_column(String, index=True)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    flash_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sram_bytes: Mapped[int | None] = mapped_column(BigInteger)
    encoded_weight_bytes: Mapped[int | None] = mapped_column(BigInteger)
    original_weight_bytes: Mapped[int | None] = mapped_column(BigInteger)
    npu_cycles: Mapped[int | None] = mapped_column(BigInteger)
    total_cycles: Mapped[int | None] = mapped_column(BigInteger)
    latency_s: Mapped[float | None] = mapped_column(Double)
    latency_is_estimate: Mapped[bool | None] = mapped_column(Boolean)
    accuracy_int8: Mapped[float | None] = mapped_column(Double)
    accuracy_float: Mapped[float | None] = mapped_column(Double)
    accuracy_samples: Mapped[int | None] = mapped_column(BigInteger)
    tflm_arena_bytes: Mapped[int | None] = mapped_column(BigInteger)
    rhs_bound_bytes: Mapped[float | None] = mapped_column(Double)
    empirical_entropy_bytes: Mapped[float | None] = mapped_column(Double)
    coded_mask_bytes: Mapped[float | None] = mapped_column(Double)
    tool_versions: Mapped[Any] = mapped_column(_json(), nullable=True)
    git_sha: Mapped[str | None] = mapped_column(String)
    host: Mapped[str | None] = mapped_column(String)
    extra: Mapped[Any] = mapped_column(_json(), nullable=True)


class RunMember(Base):
    """A run's measurements include cache hits made earlier: a run lists each of them here."""

    __tablename__ = "run_members"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    measurement_id: Mapped[int] = mapped_column(ForeignKey("measurements.id"), primary_key=True)


MEASUREMENT_COLUMNS: tuple[str, ...] = tuple(c.name for c in Measurement.__table__.columns)
RUN_COLUMNS: tuple[str, ...] = tuple(c.name for c in Run.__table__.columns)
# Assigned by the store: a record's own values for these are ignored.

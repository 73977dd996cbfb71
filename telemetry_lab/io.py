"""Reading telemetry parquet files: schema checks, layout, streaming by row groups.

Only the needed columns are read, a few row groups at a time, so memory does not grow
with the file's length. Works on local paths and ``s3://`` URIs alike (ranged reads).
"""

from __future__ import annotations

import math
import posixpath
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .errors import DataError, LayoutError, TelemetryLabError
from .layout import LAYOUT_METADATA_KEY, Layout, default_layout


#: Local row groups up to this many rows are read in one call rather than in batches.
WHOLE_ROW_GROUP_ROWS = 1 << 18


def file_stem(uri: str) -> str:
    name = posixpath.basename(uri.rstrip("/"))
    return name[: -len(".parquet")] if name.endswith(".parquet") else name


@dataclass
class Chunk:
    """Consecutive rows ``[start, start + rows)`` of the projected columns: timestamps as
    int64 ns (None when not read), sensor values as float64 (nulls and infinities are NaN),
    flags with nulls as 0."""

    start: int
    rows: int
    timestamps: np.ndarray | None
    columns: dict[str, np.ndarray]
    flags: np.ndarray | None

    def __len__(self) -> int:
        return self.rows


class TelemetryFile:
    """An opened, schema-checked telemetry file.

    Raises :class:`DataError` (naming the file) when the file is not parquet, is
    truncated, lacks a required column, has a column of the wrong type or has no rows.
    """

    def __init__(self, uri: str):
        self.uri = uri
        try:
            self._source = storage.open_input(uri)
        except TelemetryLabError:
            raise
        try:
            # Pre-buffering coalesces the ranged reads of a row group's column chunks: a
            # win on S3, a loss on a local disk. Its cache lives as long as the reader,
            # so row groups are read one reader at a time (see iter_chunks).
            self._pre_buffer = storage.is_s3(uri)
            self._pf = pq.ParquetFile(self._source, pre_buffer=self._pre_buffer)
            self._pf.schema_arrow  # a corrupt footer may fail only here (bad UTF-8 names)
        except (pa.ArrowException, OSError, ValueError) as exc:
            self._source.close()
            raise DataError(f"not a readable parquet file ({_first_line(exc)})", file=uri) from None
        try:
            self.layout = self._read_layout()
            self._check_schema()
        except TelemetryLabError as exc:
            self.close()
            raise exc.with_file(uri)
        md = self._pf.metadata
        self._column_index = {md.schema.column(i).path: i for i in range(md.num_columns)}
        self.rows = md.num_rows
        if self.rows == 0:
            self.close()
            raise DataError("file has no rows", file=uri)

    # -- metadata ---------------------------------------------------------------------

    def _read_layout(self) -> Layout:
        meta = self._pf.schema_arrow.metadata or {}
        if LAYOUT_METADATA_KEY in meta:
            return Layout.from_json(meta[LAYOUT_METADATA_KEY])
        return default_layout()

    def _check_schema(self) -> None:
        schema = self._pf.schema_arrow
        lay = self.layout

        def field(name: str, what: str) -> pa.Field:
            idx = schema.get_field_index(name)
            if idx < 0:
                raise DataError(f"missing required column {name!r} ({what})")
            return schema.field(idx)

        ts = field(lay.timestamp_column, "int64 ns timestamps")
        if not (pa.types.is_int64(ts.type) or pa.types.is_timestamp(ts.type)):
            raise DataError(f"column {lay.timestamp_column!r} has type {ts.type}, expected int64 "
                            "nanoseconds since the epoch")
        for ch in lay.channels:
            f = field(ch.name, f"{ch.role} samples")
            if not pa.types.is_floating(f.type):
                raise DataError(f"column {ch.name!r} has type {f.type}, expected float64",
                                channel=ch.name)
        if lay.flags_column:
            f = field(lay.flags_column, "uint32 fault bitfield")
            if not pa.types.is_integer(f.type):
                raise DataError(f"column {lay.flags_column!r} has type {f.type}, expected uint32")
        for col in (lay.site_id_column, lay.region_column):
            if col:
                f = field(col, "string")
                t = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
                if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
                    raise DataError(f"column {col!r} has type {f.type}, expected string")

    def _first_value(self, column: str | None) -> str | None:
        """The first value of a label column (None when it is null or there is none)."""
        md = self._pf.metadata
        group = next((g for g in range(md.num_row_groups) if md.row_group(g).num_rows), None)
        if not column or group is None:
            return None
        # One value throughout the row group, as a site's label is: its footer statistics
        # tell it without decoding the column.
        st = md.row_group(group).column(self._column_index[column]).statistics
        if (st is not None and st.has_min_max and st.has_null_count and st.null_count == 0
                and isinstance(st.min, str) and st.min == st.max):
            return st.min
        try:
            col = self._pf.read_row_group(group, columns=[column]).column(0)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"cannot read column {column!r} ({_first_line(exc)})", file=self.uri) from None
        for chunk in col.chunks:
            if len(chunk):
                value = chunk[0].as_py()
                return None if value is None else str(value)
        return None

    @property
    def site_id(self) -> str:
        return self._first_value(self.layout.site_id_column) or file_stem(self.uri)

    @property
    def region(self) -> str | None:
        return self._first_value(self.layout.region_column)

    @property
    def row_group_rows(self) -> list[int]:
        md = self._pf.metadata
        return [md.row_group(i).num_rows for i in range(md.num_row_groups)]

    # -- data -------------------------------------------------------------------------

    def iter_chunks(self, channels: Sequence[str], *, batch_rows: int = 65536,
                    flags: bool = True, timestamps: bool = True) -> Iterator[Chunk]:
        """Stream the timestamp (unless ``timestamps=False``), flag (unless ``flags=False``)
        and given sensor columns, row group by row group.

        Each call decodes through a parquet reader of its own over the file opened at
        construction (whose ranged reads may run concurrently): calls may run in parallel
        threads, each decoding its own columns of the same file. A missing timestamp or a
        flag outside the bitfield raises :class:`DataError` (with its ``row``) once the
        rows before it have been yielded; data that cannot be decoded raises it naming the
        first row of the row group (or batch of a large one) it is in.
        """
        lay = self.layout
        cols = [lay.timestamp_column] if timestamps else []
        cols.extend(channels)
        flags_column = lay.flags_column if flags else None
        if flags_column:
            cols.append(flags_column)
        start = 0
        try:
            pf = pq.ParquetFile(self._source, metadata=self._pf.metadata,
                                pre_buffer=self._pre_buffer)
            finite = self._finite_by_statistics(channels)
            for groups, batch in self._iter_batches(pf, cols, batch_rows):
                bad = self._first_bad_value(batch, timestamps, flags_column, start)
                if bad is not None:
                    # The rows before it first, as a reader of these columns one row at a
                    # time would have them: the error must not depend on how rows are
                    # batched, nor on which columns a reader reads.
                    if bad.row > start:
                        yield self._chunk(start, batch.slice(0, bad.row - start), groups,
                                          channels, finite, timestamps, flags_column)
                    raise bad
                yield self._chunk(start, batch, groups, channels, finite, timestamps,
                                  flags_column)
                start += batch.num_rows
        except TelemetryLabError as exc:
            raise exc.with_file(self.uri)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"corrupt data near row {start} ({_first_line(exc)})", file=self.uri) from None

    def _first_bad_value(self, batch: pa.RecordBatch, timestamps: bool, flags_column: str | None,
                         start: int) -> DataError | None:
        """The first value of the batch that the file must not hold: a missing timestamp,
        or a flag that is not a 32-bit bitfield (the timestamp first at the same row)."""
        found = []
        if timestamps:
            fault = self._timestamp_fault(batch.column(self.layout.timestamp_column), start)
            if fault is not None:
                found.append(fault)
        if flags_column and batch.schema.field(flags_column).type.bit_width == 64:
            col = batch.column(flags_column)
            at = _first_non_bitfield(col.fill_null(0).to_numpy(zero_copy_only=False))
            if at is not None:
                found.append(DataError(f"column {flags_column!r} holds {col[at].as_py()} at row "
                                       f"{start + at}, not a 32-bit fault bitfield",
                                       row=start + at))
        return min(found, key=lambda e: e.row, default=None)

    def _timestamp_fault(self, col: pa.Array, start: int) -> DataError | None:
        """The first timestamp of ``col`` (rows from ``start``) that is missing or that int64
        nanoseconds cannot hold, as the error to raise; None if there is none."""
        name = self.layout.timestamp_column
        found = []
        if col.null_count:
            at = start + int(np.argmax(col.is_null().to_numpy(zero_copy_only=False)))
            found.append(DataError(f"column {name!r} has a missing value at row {at}", row=at))
        beyond = _first_beyond_ns(col)
        if beyond is not None:
            at, value = start + beyond[0], beyond[1]
            found.append(DataError(f"column {name!r} holds {value} {col.type.unit} at row {at}, "
                                   "beyond the years 1677-2262 that int64 nanoseconds can hold",
                                   row=at))
        return min(found, key=lambda e: e.row, default=None)

    def _chunk(self, start: int, batch: pa.RecordBatch, groups: list[int], channels: Sequence[str],
               finite: dict[str, list[bool]], timestamps: bool, flags_column: str | None) -> Chunk:
        """A batch of checked values as arrays (see :class:`Chunk`)."""
        ts = _timestamps_ns(batch.column(self.layout.timestamp_column)) if timestamps else None
        data = {name: _float_array(batch.column(name),
                                   may_hold_inf=not all(finite[name][g] for g in groups))
                for name in channels}
        flag_values = None
        if flags_column:
            col = batch.column(flags_column)
            flag_values = _bitfield(col.fill_null(0) if col.null_count else col)
        return Chunk(start, batch.num_rows, ts, data, flag_values)

    def leading_timestamps(self, rows: int) -> np.ndarray:
        """The first ``rows`` timestamps (ns; fewer if the file is shorter, or if one is
        missing or beyond int64 nanoseconds: the timestamps before it). Such a value is an
        error here only when fewer than two timestamps precede it; otherwise it is raised
        where every column is read in row order (:meth:`iter_chunks`), with any error of
        an earlier row first."""
        col = self.layout.timestamp_column
        md = self._pf.metadata
        groups, have = [], 0
        for i in range(md.num_row_groups):
            if have >= rows:
                break
            groups.append(i)
            have += md.row_group(i).num_rows
        try:
            ts = self._pf.read_row_groups(groups, columns=[col]).column(0).combine_chunks()
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"cannot read column {col!r} ({_first_line(exc)})", file=self.uri) from None
        fault = self._timestamp_fault(ts, 0)
        if fault is not None:
            if fault.row < 2:
                raise fault.with_file(self.uri)
            ts = ts.slice(0, fault.row)
        return _timestamps_ns(ts)[:rows]

    def _finite_by_statistics(self, channels: Sequence[str]) -> dict[str, list[bool]]:
        """Per channel and row group, whether the footer's statistics prove that the column
        chunk holds no infinity: a finite minimum and maximum (writers leave NaN out of
        them). Where they do, the chunk need not be scanned for infinities."""
        md = self._pf.metadata
        finite = {}
        for name in channels:
            proven = []
            for g in range(md.num_row_groups):
                st = md.row_group(g).column(self._column_index[name]).statistics
                # Half floats' bounds come as raw bytes: not proven, scanned.
                proven.append(st is not None and st.has_min_max and isinstance(st.min, float)
                              and isinstance(st.max, float)
                              and math.isfinite(st.min) and math.isfinite(st.max))
            finite[name] = proven
        return finite

    def _iter_batches(self, pf: pq.ParquetFile, cols: list[str], batch_rows: int):
        """Record batches of the columns, each with the row groups it comes from."""
        # One reader per row group bounds memory by a row group whatever the file's length.
        # Local row groups of modest size are read whole, and small ones together up to
        # `batch_rows`: that skips the batch reader's overhead (about a fifth of the read,
        # and most of it for row groups of a few rows). On S3 the pre-buffer cache lives
        # as long as its reader, so there every row group gets a reader of its own.
        md = pf.metadata
        group: list[int] = []
        group_rows = 0
        for i in range(md.num_row_groups):
            rows = md.row_group(i).num_rows
            if self._pre_buffer or rows > max(batch_rows, WHOLE_ROW_GROUP_ROWS):
                if group:
                    yield from self._read_groups(pf, group, cols)
                    group, group_rows = [], 0
                for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[i],
                                             columns=cols, use_threads=False):
                    yield [i], batch
                continue
            group.append(i)
            group_rows += rows
            if group_rows >= batch_rows:
                yield from self._read_groups(pf, group, cols)
                group, group_rows = [], 0
        if group:
            yield from self._read_groups(pf, group, cols)

    @staticmethod
    def _read_groups(pf: pq.ParquetFile, groups: list[int], cols: list[str]):
        # Single-threaded: the caller's threads each decode their own columns.
        try:
            table = pf.read_row_groups(groups, columns=cols, use_threads=False)
        except (pa.ArrowException, OSError):
            if len(groups) == 1:
                raise
            # Again one group at a time: the good ones are used, and the error comes
            # from the bad one, at its own first row.
            for group in groups:
                yield from TelemetryFile._read_groups(pf, [group], cols)
            return
        if len(groups) > 1:
            table = table.combine_chunks()  # one chunk, not one per row group
        for batch in table.to_batches():
            yield groups, batch

    def close(self) -> None:
        self._source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


#: Nanoseconds in each unit of the timestamp type.
_NS_PER_UNIT = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


def _first_beyond_ns(col: pa.Array) -> tuple[int, int] | None:
    """Row and value of the first timestamp of a coarser unit than ns that int64
    nanoseconds cannot hold, None if there is none (or the column is int64 or ns)."""
    if not pa.types.is_timestamp(col.type) or col.type.unit == "ns":
        return None
    limit = np.iinfo(np.int64).max // _NS_PER_UNIT[col.type.unit]
    raw = col.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero((raw > limit) | (raw < -limit))
    return (int(bad[0]), int(raw[bad[0]])) if len(bad) else None


def _timestamps_ns(col: pa.Array) -> np.ndarray:
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.timestamp("ns")).cast(pa.int64())
    return col.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _first_non_bitfield(flags: np.ndarray) -> int | None:
    """The first of 64-bit flags that is not a 32-bit bitfield (negative, or bits above 31),
    None if all are."""
    bad = np.flatnonzero((flags < 0) | (flags > 0xFFFFFFFF))
    return int(bad[0]) if len(bad) else None


def _bitfield(col: pa.Array) -> np.ndarray:
    """Flags without nulls as uint32. Signed integers of up to 32 bits are the same bits
    (two's complement: bit 31 set is a negative int32); 64-bit values are checked by
    :func:`_first_non_bitfield` first, never silently cut to 32 bits."""
    flags = col.to_numpy(zero_copy_only=False)
    if flags.dtype.kind == "i" and flags.dtype.itemsize <= 4:
        flags = flags.view(f"u{flags.dtype.itemsize}")
    return flags.astype(np.uint32, copy=False)


def _float_array(col: pa.Array, *, may_hold_inf: bool = True) -> np.ndarray:
    # Nulls become NaN, and so do infinities (a sensor's overflow code, not a reading):
    # missing samples are left out downstream, where one inf would poison every sum.
    arr = col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    if not may_hold_inf:
        return arr
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, or a sum past 1e308
        total = arr.sum()
    if not np.isfinite(total) and np.isinf(arr).any():
        arr = np.where(np.isinf(arr), np.nan, arr)
    return arr


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns worth dictionary-encoding when written: labels, not measurements.

    Parquet writers dictionary-encode every column by default. A float sensor column has
    no repeats, so its dictionary holds every value: a quarter larger than plain encoding
    and, measured here, about 40 % slower to read.
    """
    return [f.name for f in schema
            if pa.types.is_dictionary(f.type) or pa.types.is_string(f.type)
            or pa.types.is_large_string(f.type)]


def with_required(schema: pa.Schema, names) -> pa.Schema:
    """``schema`` with the columns ``names`` marked as never null.

    A reader then skips decoding the column's definition levels: a third of the cost of
    reading a float column, measured here.
    """
    names = set(names)
    return pa.schema([f.with_nullable(False) if f.name in names and not pa.types.is_null(f.type)
                      else f for f in schema],
                     metadata=schema.metadata)


def write_table(uri: str, table: pa.Table, *, row_group_rows: int = 65536) -> None:
    """Write a table as parquet, atomically (temporary object, then rename or single PUT).

    Columns without nulls are written as required, and only labels are dictionary-encoded
    (see :func:`with_required`, :func:`dictionary_columns`).
    """
    table = table.cast(with_required(table.schema, [name for name, col in
                                                    zip(table.column_names, table.columns)
                                                    if col.null_count == 0]))
    options = {"row_group_size": row_group_rows,
               "use_dictionary": dictionary_columns(table.schema)}
    if storage.is_s3(uri):
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, **options)
        storage.write_bytes(uri, sink.getvalue().to_pybytes())
        return
    import os

    tmp = storage.local_temp_path(uri)
    try:
        pq.write_table(table, tmp, **options)
        os.replace(tmp, storage.resolve(uri)[1])
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


__all__ = ["TelemetryFile", "Chunk", "file_stem", "dictionary_columns", "with_required", "write_table", "LayoutError"]

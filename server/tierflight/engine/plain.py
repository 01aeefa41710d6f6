"""Dictionary-encoded results (DuckDB's ENUMs) sent as their value type.

DuckDB hands an ENUM column to Arrow as a dictionary array. Flight streams those only when
every dictionary is sent ahead of the batches that use it, and ADBC's Flight SQL driver and
pyarrow readers then fail on a stream whose dictionaries change from batch to batch (or on
a schema that announces a dictionary the batches do not carry: "IPC stream did not have the
expected (1) dictionaries"). A client asks for values, not encodings, so every dictionary,
nested ones included, is decoded to its value type: the schema a FlightInfo announces, the
batches streamed and the answers cached then all carry plain types.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from tierflight.core.errors import Unsupported


def has_dictionary(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return True
    return any(has_dictionary(t.field(i).type) for i in range(t.num_fields))


def plain_type(t: pa.DataType) -> pa.DataType:
    """``t`` with every dictionary replaced by its value type."""
    if not has_dictionary(t):
        return t
    if pa.types.is_dictionary(t):
        return plain_type(t.value_type)
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(plain_type(f.type)) for f in t])
    if pa.types.is_map(t):
        return pa.map_(
            t.key_field.with_type(plain_type(t.key_type)), t.item_field.with_type(plain_type(t.item_type))
        )
    if pa.types.is_large_list(t):
        return pa.large_list(t.value_field.with_type(plain_type(t.value_type)))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(t.value_field.with_type(plain_type(t.value_type)), t.list_size)
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(plain_type(t.value_type)))
    if pa.types.is_union(t):
        fields = [t.field(i) for i in range(t.num_fields)]
        return pa.union([f.with_type(plain_type(f.type)) for f in fields], t.mode, list(t.type_codes))
    raise Unsupported(f"results of type {t} cannot be sent; cast the column to VARCHAR")


def plain_schema(schema: pa.Schema) -> pa.Schema | None:
    """``schema`` without dictionaries, or None when it has none (the common case)."""
    if not any(has_dictionary(f.type) for f in schema):
        return None
    return pa.schema([f.with_type(plain_type(f.type)) for f in schema], metadata=schema.metadata)


def plain_array(array: pa.Array, target: pa.DataType) -> pa.Array:
    if array.type == target:
        return array
    if pa.types.is_union(array.type):
        # Arrow cannot cast unions: rebuild one from its children.
        children = [plain_array(array.field(i), target.field(i).type) for i in range(target.num_fields)]
        names = [target.field(i).name for i in range(target.num_fields)]
        codes = list(target.type_codes)
        if target.mode == "sparse":
            return pa.UnionArray.from_sparse(array.type_codes, children, names, codes)
        return pa.UnionArray.from_dense(array.type_codes, array.offsets, children, names, codes)
    try:
        return array.cast(target)
    except pa.ArrowNotImplementedError:
        raise Unsupported(
            f"results of type {array.type} cannot be sent; cast the column to VARCHAR"
        ) from None


def plain_batches(reader: pa.RecordBatchReader, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    for batch in reader:
        columns = [
            plain_array(column, field.type) for column, field in zip(batch.columns, schema, strict=True)
        ]
        yield pa.RecordBatch.from_arrays(columns, schema=schema)


def plain_reader(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """``reader`` itself, or a reader of its batches with dictionaries decoded."""
    schema = plain_schema(reader.schema)
    if schema is None:
        return reader
    return pa.RecordBatchReader.from_batches(schema, plain_batches(reader, schema))


# What a column name holds when DuckDB named an unaliased expression after the SQL the server
# ran rather than the client's: a rewritten relation (a source marker, a data file list, a
# rollup table). Such a name would show server paths and internals to the client.
_REWRITTEN_TEXT = ("__tf_", "read_parquet(", "tf_rollup", "tf_dimension", "iceberg_scan(")


def shows_rewritten_text(names: list[str]) -> bool:
    return any(marker in name for name in names for marker in _REWRITTEN_TEXT)


def renamed_schema(schema: pa.Schema, names: list[str]) -> pa.Schema:
    return pa.schema([f.with_name(n) for f, n in zip(schema, names, strict=True)], metadata=schema.metadata)


def renamed_reader(reader: pa.RecordBatchReader, names: list[str]) -> pa.RecordBatchReader:
    """``reader``'s batches under the column names ``names`` (same columns, same order)."""
    schema = renamed_schema(reader.schema, names)
    return pa.RecordBatchReader.from_batches(schema, (b.rename_columns(names) for b in reader))

"""DuckDB's aggregate functions by name, for the ones sqlglot parses as a plain function call.

sqlglot knows ``sum``, ``count``, ``avg`` ... as aggregates; ``histogram``, ``product``,
``entropy``, ``fsum`` and a few dozen more it parses as an unknown function (``exp.Anonymous``).
Over a rollup such a call would read each stored group once, not each event: a statement that
calls one is never answered from a rollup (router/planner.py). The names are DuckDB's
``duckdb_functions()`` of type ``aggregate`` (tests/test_router_aggregates.py checks that the
list still holds every one of them).
"""

from __future__ import annotations

from sqlglot import exp

DUCKDB_AGGREGATES = frozenset(
    {
    "any_value", "approx_count_distinct", "approx_quantile", "approx_top_k", "arbitrary", "arg_max",
    "arg_max_null", "arg_max_nulls_last", "arg_min", "arg_min_null", "arg_min_nulls_last", "argmax",
    "argmin", "array_agg", "avg", "bit_and", "bit_or", "bit_xor", "bitstring_agg", "bool_and",
    "bool_or", "combine_aggr", "corr", "count", "count_if", "count_star", "countif", "covar_pop",
    "covar_samp", "decimal_average", "entropy", "favg", "first", "fsum", "group_concat",
    "histogram", "histogram_exact", "kahan_sum", "kurtosis", "kurtosis_pop", "last", "list",
    "listagg", "lttb", "mad", "max", "max_by", "mean", "median", "min", "min_by", "mode", "product",
    "quantile", "quantile_cont", "quantile_disc", "regr_avgx", "regr_avgy", "regr_count",
    "regr_intercept", "regr_r2", "regr_slope", "regr_sxx", "regr_sxy", "regr_syy",
    "reservoir_quantile", "sem", "skewness", "stddev", "stddev_pop", "stddev_samp", "string_agg",
    "sum", "sum_no_overflow", "sumkahan", "var_pop", "var_samp", "variance", "variant_group_object",
    }
)


def unknown_aggregate(tree: exp.Expr) -> str | None:
    """The name of the first call in ``tree`` that sqlglot does not know as an aggregate but
    DuckDB runs as one, or None."""
    for node in tree.find_all(exp.Anonymous):
        name = str(node.name).lower()
        if name in DUCKDB_AGGREGATES:
            return name
    return None

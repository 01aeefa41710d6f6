"""Demo data: a deterministic, vectorised generator of synthetic ad-tech events."""

from tierflight.demo.generate import (
    EVENTS_SCHEMA,
    GenerateStats,
    generate_days,
    generate_to_hive,
)

__all__ = ["EVENTS_SCHEMA", "GenerateStats", "generate_days", "generate_to_hive"]

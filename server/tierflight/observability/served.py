"""What the operations endpoints read from the server they watch.

The App (the composition root, a layer above) satisfies it; observability never imports
the App. The imports are for type checking only: the front of ``serve --workers`` serves
/metrics from this package and imports no engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tierflight.core.config import Config
    from tierflight.engine.executor import Executor
    from tierflight.rollups.registry import RollupRegistry
    from tierflight.tiers.store import TableStore


class Served(Protocol):
    @property
    def config(self) -> Config: ...

    @property
    def stores(self) -> Mapping[str, TableStore]: ...

    @property
    def rollups(self) -> RollupRegistry: ...

    @property
    def executor(self) -> Executor: ...

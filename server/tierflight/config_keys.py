"""Unknown config keys are refused by name, with the nearest valid one.

A typo must not silently leave a setting at its default: ``router.enabld = false`` would
otherwise run with the router on and nobody the wiser.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from tierflight.core.errors import ConfigError

# Which TIERFLIGHT_* variable set a key (and the sections on its path): a key that came from
# the environment is refused naming the variable, since no file line holds it.
Origins = dict[tuple[str, ...], str]


def unknown_key(
    key: str,
    known: Iterable[str],
    path: tuple[str, ...],
    origins: Mapping[tuple[str, ...], str] | None = None,
    error: type[ConfigError] = ConfigError,
) -> ConfigError:
    names = list(known)
    close = difflib.get_close_matches(key, names, n=1)
    origin = (origins or {}).get((*path, key))
    source = f" (set by {origin})" if origin else ""
    if not path:
        hint = f"; did you mean [{close[0]}]?" if close else f"; sections: {', '.join(names)}"
        return error(f"unknown section [{key}]{source}{hint}")
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(names))}"
    return error(f"unknown key {key!r} in [{'.'.join(path)}]{source}{hint}")


def check_keys(
    section: Mapping[str, Any],
    known: Iterable[str],
    path: tuple[str, ...],
    origins: Mapping[tuple[str, ...], str] | None = None,
    error: type[ConfigError] = ConfigError,
) -> None:
    names = list(known)
    for key in section:
        if key not in names:
            raise unknown_key(str(key), names, path, origins, error)

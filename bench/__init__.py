"""tierflight's benchmark suite: ``python -m bench.run`` (``make bench``).

Each benchmark is a module of this package that registers a function with
:func:`bench.registry.benchmark`; :mod:`bench.run` imports every module, runs the selected
benchmarks, stores each result as ``bench/results/<name>.json`` and rewrites
``docs/benchmarks.md`` from all stored results.
"""

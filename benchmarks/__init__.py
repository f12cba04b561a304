"""`make bench`: measured, side-by-side figures for the harness (see benchmarks/__main__.py and docs/performance.md)."""

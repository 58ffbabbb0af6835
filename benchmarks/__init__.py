"""The scripts behind BENCHMARKS.md: each times one inner loop alone. Run from the
repository root as modules, e.g. `python -m benchmarks.bench_sft --help`."""

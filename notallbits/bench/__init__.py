"""Benchmark commands: tools that measure the library from above it (python -m notallbits.bench.<name>)."""

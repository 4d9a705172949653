"""Datasets: one registry entry per benchmark, all normalized to the same JSONL record."""

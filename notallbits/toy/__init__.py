"""Toy reasoners: tiny Qwen3 models trained here to think step by step, so that accuracy
really depends on size, weight bits, token budget, votes and KV compression."""

"""Benchmark definitions (``*.toml``, shipped as package data) and performance scripts."""

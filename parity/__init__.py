"""Parity harness: run the same weights and inputs through several backends and compare everything."""

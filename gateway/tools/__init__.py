"""Offline tools: replay of order files, the demo, the compliance year, order generation."""

"""Derivatives: futures and options on allowances, and the clearing house behind them.

``clearing`` keeps positions, margin, daily settlement, close-out and delivery, inside
the engine's sequenced pipeline.
"""

"""Compliance: allocation of allowances, verified emissions, surrender and the deadline.

``allocation`` holds the yearly rules as pure integer arithmetic; ``registry`` keeps each
covered entity's obligation and what it surrendered, inside the engine's sequenced
pipeline.
"""

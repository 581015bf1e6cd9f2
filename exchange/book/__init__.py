"""The order book of one instrument: price-time priority matching.

``fast.FastBook`` is the book the engine runs; ``naive.NaiveBook`` is the slow, obviously
correct reference that the tests hold it equal to, command for command.
"""

"""The bot side: ``client.ExchangeClient`` for trading over MQTT, and example traders.

Nothing here loads the engine: a bot needs only the topic names and message shapes.
"""

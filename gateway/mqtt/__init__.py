"""The exchange's MQTT service: the gateway, its wire format, and the brokers it runs on.

``service`` joins the engine to the broker; ``serve`` is ``carbonx serve``; ``wire``
decodes bots' commands and encodes reports; ``embedded`` is the zero-setup broker and
``brokerconfig`` writes a mosquitto configuration.
"""

"""carbonx edge: everything the pure core must not do.

``cli`` is the ``carbonx`` command line. ``mqtt`` is the live exchange: the gateway that
joins the engine to an MQTT broker, and the brokers. ``bots`` is the other side of that
link: the client bots trade with, and example traders. ``tools`` are the offline
commands: replay, demo, the compliance year, order generation. ``protocol`` holds what
both sides of the link share. The core (``exchange``) never imports any of it.
"""

"""carbonx edge: command line, order-file replay with timing, MQTT gateway (to come).

The edge owns everything the core must not: clocks, terminals, files written for users,
and (later) the event loop and the network. The core (``exchange``) never imports it.
"""

"""Cluster mode: the command log on NATS JetStream, a leader and hot standbys."""

"""Kafka plumbing shared by the service and the tools: configured clients, topic admin and the
embedded development broker."""

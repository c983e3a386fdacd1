"""Kafka/Faust plumbing: settings, embedded broker, topics, app factory, CLI and the live demo."""

"""The worker's Faust layer: the app factory (``app``) wires the agents (``ingest``, ``stats``), the tick timer
(``tick``), the model follower service (``follower``) and the revoke handler onto one app; ``runtime`` is the
Kafka-free state they drive; ``sink`` writes its outputs to topics; ``trainer`` is the trainer service."""

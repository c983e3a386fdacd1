"""tickmatch: real-time 1:1 matchmaking on Kafka.

One import root, one-way layers (each may import only the ones before it; ``tests/test_layers.py`` enforces it):

1. ``tickmatch.schemas``   wire records, codec, JSON Schema export
2. ``tickmatch.matching``  the engine: pool arrays, pair scores, candidates, auction (numpy/numba, no Kafka)
3. ``tickmatch.learning``, ``tickmatch.outcomes``, ``tickmatch.market``  duration model and trainer, label join
   and audits, the market simulator (no Kafka)
4. ``tickmatch.stream``    settings, topics, the embedded broker, group-less readers and the read-back
5. ``tickmatch.agents``    the Faust app factory, its agents, timers and services, the trainer service
6. entry points: ``tickmatch.cli``, ``tickmatch.demo``, ``tickmatch.testing``

On disk, ``stream/``, ``agents/`` and ``schemas/`` sit at the repository's top level (the product card's layout)
and ``tickmatch/stream`` etc. are links to them; an installed wheel holds plain copies under ``tickmatch/``.
"""

__version__ = "0.1.0"

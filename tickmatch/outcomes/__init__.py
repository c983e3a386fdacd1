"""Outcome processing that needs no Kafka: the chat-end/decision join and the double-booking audit."""

from tickmatch.outcomes.audit import double_booked
from tickmatch.outcomes.labeljoin import EndOutcome, LabelJoin

__all__ = ["EndOutcome", "LabelJoin", "double_booked"]

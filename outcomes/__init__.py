"""Outcome processing that needs no Kafka: the chat-end/decision join and the double-booking audit."""

from outcomes.audit import double_booked
from outcomes.labeljoin import EndOutcome, LabelJoin

__all__ = ["EndOutcome", "LabelJoin", "double_booked"]

"""Experiments on a shared pool: switch-back schedules (and, next, their read-outs)."""

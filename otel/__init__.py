"""Tracing setup and the ops.run_events mirror."""

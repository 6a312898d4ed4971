"""The run store: a run trained once and kept under its key, with its record, weights and provenance; W&B tracking."""

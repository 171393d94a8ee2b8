"""Wenming's common code: settings, database, event envelope and store, outbox, Kafka, projections, auth."""

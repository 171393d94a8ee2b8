"""Tests on a three-broker Kafka cluster (RF 3, min.insync.replicas 2) started for the session."""

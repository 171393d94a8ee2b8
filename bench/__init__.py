"""Wenming's benchmarks: the system's figures beside the raw limits of its parts (`make bench`)."""

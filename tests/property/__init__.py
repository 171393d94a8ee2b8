"""Property-based tests (hypothesis) of the pure deciders."""

"""The fault suite (`make faults`): load, kill, restart, garbage; then count and compare."""

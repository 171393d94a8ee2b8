"""Scoring: daily ranking, weekly summary, laggards, red/black lists and long-term metrics."""

"""The operator dashboard: a read-side app that shows the campaign and its streams live (SSE)."""

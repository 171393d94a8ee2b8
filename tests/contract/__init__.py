"""Contract tests: schemathesis against every service's OpenAPI document."""

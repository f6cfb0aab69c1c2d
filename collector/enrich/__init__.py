"""Enrichment: bot verdicts, user-agent details and geography added to stored rows off the request loop."""

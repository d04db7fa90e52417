"""The result schema (one versioned row) and the JSON-lines files rows live in."""

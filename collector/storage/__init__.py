"""Storage: rows to committed or journaled rows; every SQL statement of the collector."""

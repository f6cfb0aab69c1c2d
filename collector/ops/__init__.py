"""Operations: metrics and the embedded PostgreSQL."""

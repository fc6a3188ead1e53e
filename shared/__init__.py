"""Code every service imports: configuration, database, storage, events, tokens, logging."""

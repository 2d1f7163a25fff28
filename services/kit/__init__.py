"""The small shared kit every service stands on: config, errors, storage, events, cache, server."""

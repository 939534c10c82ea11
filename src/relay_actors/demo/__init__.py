"""The `relay-actors demo` command: a worker node in another process, callers here."""

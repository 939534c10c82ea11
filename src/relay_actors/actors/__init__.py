"""The actors of a node: listener, producers with executors, acker and mailboxes."""

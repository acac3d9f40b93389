"""Training embedding and liveness networks; nothing in the runtime path imports this package."""

"""The storage layer: every read and write of the store, and the only place that commits."""

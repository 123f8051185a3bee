"""HTTP routes; thin: validate, call the storage layer, shape the answer."""

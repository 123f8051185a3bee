"""Pydantic request/response schemas of the ``/api/v1`` wire contract (separate from the ORM)."""

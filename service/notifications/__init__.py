"""Notifications (issue 20): what an event says (``events``), how each channel kind renders and
signs it (``messages``), and the worker that delivers the outbox (``worker``)."""

"""Command brokers: wake a trainer's long-poll when a command for its run is created.

The database is the source of truth; a broker only says "look again". A missed message costs at
most one poll interval, never a command.
"""

from service.broker.base import CommandBroker, Listener
from service.broker.memory import InProcessBroker
from service.broker.redis import RedisBroker

__all__ = ["CommandBroker", "InProcessBroker", "Listener", "RedisBroker"]

"""``sharpwatch notify``: notification channels from the command line (issue 20), on the
configured database like ``sharpwatch tokens``. A URL given as ``-`` is read from stdin, so a
webhook's secret path need not enter the shell history."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import ValidationError

from service.notifications.events import EVENT_KINDS
from service.wire import Severity


def _url(value: str) -> str:
    return sys.stdin.readline().strip() if value == "-" else value


def _add(args: argparse.Namespace) -> int:
    from service.cli import _with_session
    from service.schemas.notifications import ChannelCreate, SubscriptionCreate
    from service.storage import notifications as store

    try:
        spec = ChannelCreate(
            name=args.name, kind=args.kind, url=_url(args.url), signing_secret=args.signing_secret
        )
        subscription = SubscriptionCreate(
            channel_id=1,  # checked here, set below
            project=args.project,
            run_id=args.run,
            severities=args.severity or [],
            rules=args.rule or [],
            events=args.event or [],
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        print(f"sharpwatch: {field}: {error['msg']}", file=sys.stderr)
        return 2

    def add(session: Any) -> int:
        channel, generated = store.create_channel(session, spec)
        store.create_subscription(
            session, subscription.model_copy(update={"channel_id": channel.id})
        )
        print(f"created {channel.kind} channel {channel.id} ({channel.name}) → {channel.url_hint}")
        if generated:
            print("its signing secret, shown only once:")
            print(generated)
        return 0

    return _with_session(add)


def _list(_args: argparse.Namespace) -> int:
    from service.cli import _with_session
    from service.storage import notifications as store

    def show(session: Any) -> int:
        subscriptions = store.list_subscriptions(session)
        print(f"{'id':>4}  {'kind':8}  {'signed':6}  {'url':32}  name  [subscriptions]")
        for row in store.list_channels(session):
            subs = [
                "project="
                + (s.project or "*")
                + f" run={s.run_id or '*'}"
                + f" severities={','.join(s.severities) or '*'}"
                + f" rules={','.join(s.rules) or '*'}"
                + f" events={','.join(s.events) or '*'}"
                for s in subscriptions
                if s.channel_id == row.id
            ]
            signed = "yes" if row.signing_secret else "no"
            print(f"{row.id:>4}  {row.kind:8}  {signed:6}  {row.url_hint:32}  {row.name}  {subs}")
        return 0

    return _with_session(show)


def _delete(args: argparse.Namespace) -> int:
    from service.cli import _with_session
    from service.storage import notifications as store

    def delete(session: Any) -> int:
        store.delete_channel(session, args.channel_id)
        print(f"deleted channel {args.channel_id}")
        return 0

    return _with_session(delete)


def add_notify_parser(commands: Any) -> None:
    """Register ``sharpwatch notify`` on the CLI's subcommands."""
    notify = commands.add_parser("notify", help="notification channels").add_subparsers(
        dest="notify_command", required=True
    )
    channels = notify.add_parser("channels", help="webhook, Slack and Discord channels")
    actions = channels.add_subparsers(dest="channels_command", required=True)
    add = actions.add_parser("add", help="add a channel subscribed to the events you name")
    add.add_argument("--name", required=True, help="a unique name")
    add.add_argument(
        "--kind",
        choices=["webhook", "slack", "discord"],
        required=True,
        help="webhook: signed JSON; slack: incoming webhook; discord: webhook",
    )
    add.add_argument("--url", required=True, help="the webhook URL, or - to read it from stdin")
    add.add_argument("--signing-secret", help="webhook HMAC key (generated when omitted)")
    add.add_argument("--project", help="only this project's runs")
    add.add_argument("--run", type=int, help="only this run")
    add.add_argument(
        "--severity", action="append", choices=[s.value for s in Severity], help="repeatable"
    )
    add.add_argument("--rule", action="append", help="repeatable; default every rule")
    add.add_argument("--event", action="append", choices=EVENT_KINDS, help="repeatable")
    add.set_defaults(handler=_add)
    actions.add_parser("list", help="channels (URLs as hints only)").set_defaults(handler=_list)
    delete = actions.add_parser("delete", help="delete a channel and its subscriptions")
    delete.add_argument("channel_id", type=int, help="the channel's id, as `list` shows it")
    delete.set_defaults(handler=_delete)

"""The ``framebus bridge`` and ``framebus nodes`` commands (registered by framebus.cli;
nats-py is imported only when one of them runs).

``framebus bridge --nats URL [--export FILTER]... [--import FILTER]... NAME``
    bridges the shared bus NAME to NATS JetStream (see framebus.bridge.nats) until
    Ctrl-C or SIGTERM, with a status line every ``--interval`` seconds on stderr
    (rewritten in place on a terminal). Exit status 1 when the bridge cannot start.
``framebus nodes --nats URL``
    lists the live nodes of the cluster registry (framebus.cluster.NodeRegistry).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_bridge_commands", "status_line"]


def add_bridge_commands(sub: Any) -> None:
    from ..bench._common import positive_float

    bridge = sub.add_parser(
        "bridge",
        help="bridge a shared bus to NATS JetStream (export and import topics)",
        description="Attach to the shared bus NAME and carry the topics matching --export "
        "to JetStream subjects of the same name, and messages on --import subjects back onto "
        "the bus, until Ctrl-C or SIGTERM. A status line goes to stderr.",
    )
    bridge.add_argument("name", metavar="NAME", help="the shared bus (as in 'framebus ls')")
    bridge.add_argument(
        "--nats",
        action="append",
        required=True,
        metavar="URL",
        help="NATS server URL, e.g. nats://127.0.0.1:4222 (repeat for several)",
    )
    bridge.add_argument(
        "--export", action="append", default=[], metavar="FILTER", help="topics to send out"
    )
    bridge.add_argument(
        "--import",
        dest="import_",
        action="append",
        default=[],
        metavar="FILTER",
        help="subjects to bring in",
    )
    bridge.add_argument("--stream", default="FRAMEBUS", help="JetStream stream (default FRAMEBUS)")
    bridge.add_argument(
        "--durable",
        default=None,
        help="the bridge's durable name (default: the bus name, '.' as '_')",
    )
    bridge.add_argument(
        "--interval", type=positive_float, default=1.0, metavar="S", help="status every S seconds"
    )
    bridge.set_defaults(func=_cmd_bridge)

    nodes = sub.add_parser(
        "nodes",
        help="list the live nodes of the cluster registry on NATS",
        description="List the nodes registered in the NATS JetStream KV registry "
        "(framebus.cluster.NodeRegistry) whose TTL has not expired.",
    )
    nodes.add_argument("--nats", action="append", required=True, metavar="URL")
    nodes.add_argument("--bucket", default="framebus_nodes", help="KV bucket")
    nodes.add_argument("--json", action="store_true", help="print JSON instead of a table")
    nodes.set_defaults(func=_cmd_nodes)


def status_line(s: dict[str, Any], rate: float | None) -> str:
    e = s["errors"]
    per_s = "" if rate is None else f" ({rate:,.0f}/s)"
    line = (
        f"{s['durable']} {s['state']}: out {s['frames_out']}{per_s} in {s['frames_in']} "
        f"pending {s['acks_pending']} dup {s['duplicates']} reconnects {s['reconnects']} "
        f"errors t{e['transient']}/p{e['permanent']}/c{e['configuration']}"
    )
    if s["last_error"] and s["state"] != "connected":
        line += f" | {s['last_error']}"
    return line


def _cmd_bridge(args: argparse.Namespace, argv: list[str], prog: str) -> int:
    import signal
    import threading
    import time

    import framebus as fb

    if not args.export and not args.import_:
        print(f"{prog} bridge: give --export and/or --import filters", file=sys.stderr)
        return 2
    try:
        bus = fb.FrameBus.attach(args.name)
    except FileNotFoundError:
        print(
            f"{prog} bridge: no shared bus named {args.name!r} (see '{prog} ls')", file=sys.stderr
        )
        return 1
    except (fb.FrameBusError, ValueError, TypeError) as exc:
        print(f"{prog} bridge: {args.name}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        from .nats import BridgeError, NatsBridge

        try:
            br = NatsBridge(
                bus,
                args.nats,
                export=args.export,
                import_=args.import_,
                stream=args.stream,
                durable=args.durable,  # None: the bus name
            )
        except (BridgeError, ValueError) as exc:
            print(f"{prog} bridge: {exc}", file=sys.stderr)
            return 1
        tty = sys.stderr.isatty()
        prev: tuple[float, int] | None = None
        try:
            while not stop.is_set():
                s = br.stats()
                now = time.monotonic()
                rate = None if prev is None else (s["frames_out"] - prev[1]) / (now - prev[0])
                prev = (now, s["frames_out"])
                text = status_line(s, rate)
                if tty:
                    print(f"\r\x1b[K{text}", end="", file=sys.stderr, flush=True)
                else:
                    print(text, file=sys.stderr, flush=True)
                stop.wait(args.interval)
        except KeyboardInterrupt:
            pass
        finally:
            br.close()
            if tty:
                print(file=sys.stderr)
            print(status_line(br.stats(), None), file=sys.stderr, flush=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        bus.close()


def _cmd_nodes(args: argparse.Namespace, argv: list[str], prog: str) -> int:
    import json
    import time

    from ..cluster.nats import ClusterError, NodeRegistry

    try:
        reg = NodeRegistry(servers=args.nats, bucket=args.bucket, connect_timeout=5.0)
    except (ClusterError, ValueError) as exc:
        print(f"{prog} nodes: {exc}", file=sys.stderr)
        return 1
    try:
        nodes = reg.describe()
    finally:
        reg.close()
    if args.json:
        print(json.dumps(nodes, indent=2, sort_keys=True))
        return 0
    if not nodes:
        print("no live nodes")
        return 0
    print(f"{'NODE':<32} {'HOST':<20} {'PID':>8} {'UP':>8}  METADATA")
    now = time.time()
    for node, info in sorted(nodes.items()):
        up = now - float(info.get("started", now))
        print(
            f"{node:<32} {info.get('host', '?'):<20} {info.get('pid', '?'):>8} "
            f"{up:>7.0f}s  {json.dumps(info.get('metadata', {}), sort_keys=True)}"
        )
    return 0

"""The benchmark suites behind ``framebus bench``.

``inproc``: one producer thread -> one consumer thread against queue.Queue,
queue.SimpleQueue and deque+Condition; ``xproc``: across processes against
multiprocessing.Queue / Pipe, faster-fifo, pyzmq and os.pipe; ``wal``: the write-ahead
log against raw rocksdict and persist-queue; ``flow``: framebus.flow's sync and inproc
runtimes against bytewax, streamz and queue.Queue threads on one pipeline; ``bridge``:
the NATS JetStream bridge against nats-py on a local nats-server. ``_common``
holds their options and what they share; the CLI reads only that, and imports a suite
when its command runs. Each suite also runs on its own: ``python -m framebus.bench.xproc --help``.
"""

"""SGLang multi-node start, simulated: a TCP rendezvous at ``--dist-init-addr``.

Protocol (newline-delimited JSON over one TCP connection per worker rank):

* rank 0 listens on the dist-init address and port; every rank ``r > 0`` connects
  (retrying until the timeout) and sends
  ``{"hello": "llmfleet-engine-sim", "node_rank": r, "nnodes": N, "tp": TP, "model": PATH}``;
* when all ``N - 1`` ranks have joined with a matching ``nnodes``/``tp`` and distinct ranks,
  rank 0 answers each ``{"ok": true, "nnodes": N}``; a mismatch is answered with
  ``{"error": "..."}`` and fails both sides;
* afterwards both ends send ``"hb\\n"`` every ``heartbeat_s``; a link that reaches EOF, errors
  or stays silent for ``peer_timeout_s`` ends the process with an NCCL-style error.
"""

from __future__ import annotations

import json
import socket
import threading
import time

from .logs import PY, traceback_text

MAGIC = "llmfleet-engine-sim"


class RendezvousError(Exception):
    """``str(exc)`` is the stderr text of the failure."""


def split_addr(addr):
    host, sep, port = str(addr).rpartition(":")
    if not sep or not port.isdigit():
        raise RendezvousError("ValueError: --dist-init-addr must be HOST:PORT, got %r" % addr)
    return host.strip("[]"), int(port)


def lost_message(rank, peer):
    return traceback_text(
        [(PY + "/sglang/srt/managers/scheduler.py", 1104, "event_loop_overlap", "batch_result = self.run_batch(batch)"),
         (PY + "/torch/distributed/distributed_c10d.py", 2806, "all_reduce", "work.wait()")],
        "torch.distributed.DistBackendError: NCCL error in: /pytorch/torch/csrc/distributed/c10d/"
        "ProcessGroupNCCL.cpp:3356, remote process exited or there was a network error, NCCL version 2.27.3\n"
        "ncclRemoteError: A call failed possibly due to a network error or a remote process exiting "
        "prematurely.\nLast error:\nsocketProgress: Connection closed by remote peer %s (seen on node rank %d)"
        % (peer, rank))


def _readline(sock, buf, deadline):
    """Read one line (bytes, without newline) before ``deadline``; None at EOF."""
    while b"\n" not in buf[0]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        sock.settimeout(left)
        data = sock.recv(4096)
        if not data:
            return None
        buf[0] += data
    line, dummy, rest = buf[0].partition(b"\n")
    buf[0] = rest
    return line


class Link(object):
    def __init__(self, sock, peer, buf=b""):
        self.sock = sock
        self.peer = peer
        self.buf = [buf]
        self.lock = threading.Lock()

    def send(self, obj):
        data = (obj if isinstance(obj, str) else json.dumps(obj)) + "\n"
        with self.lock:
            self.sock.sendall(data.encode("utf-8"))


def serve_rank0(host, port, nnodes, tp, timeout_s, log, clock=time.monotonic):
    """Wait for ``nnodes - 1`` workers; return their links (rank order)."""
    lsock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        lsock.bind((host, port))
    except OSError as exc:
        lsock.close()
        raise RendezvousError(traceback_text(
            [(PY + "/torch/distributed/rendezvous.py", 189, "_create_c10d_store", "")],
            "torch.distributed.DistNetworkError: The server socket has failed to listen on any local network "
            "address. port: %d, useIpv6: 0, code: -98, name: EADDRINUSE, message: %s" % (port, exc)))
    lsock.listen(64)
    log.info("Waiting for %d node(s) to join at %s:%d" % (nnodes - 1, host, port))
    start = clock()
    links = {}
    try:
        while len(links) < nnodes - 1:
            left = timeout_s - (clock() - start)
            if left <= 0:
                raise RendezvousError(traceback_text(
                    [(PY + "/torch/distributed/rendezvous.py", 189, "_create_c10d_store", "")],
                    "torch.distributed.DistStoreError: Timed out after %d seconds waiting for clients. "
                    "%d/%d clients joined." % (int(timeout_s) + 1, len(links) + 1, nnodes)))
            lsock.settimeout(min(left, 1.0))
            try:
                conn, addr = lsock.accept()
            except socket.timeout:
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = Link(conn, "%s<%d>" % (addr[0], addr[1]))
            try:
                line = _readline(conn, link.buf, clock() + 10.0)
                hello = json.loads(line.decode("utf-8")) if line else None
            except (OSError, ValueError):
                conn.close()
                continue
            if not isinstance(hello, dict) or hello.get("hello") != MAGIC:
                conn.close()
                continue
            rank = hello.get("node_rank")
            problem = None
            if hello.get("nnodes") != nnodes:
                problem = "nnodes mismatch: node rank %s says %s, node rank 0 says %d" % (
                    rank, hello.get("nnodes"), nnodes)
            elif hello.get("tp") != tp:
                problem = "tp mismatch: node rank %s says %s, node rank 0 says %d" % (rank, hello.get("tp"), tp)
            elif not isinstance(rank, int) or not 0 < rank < nnodes:
                problem = "invalid node rank %r for nnodes=%d" % (rank, nnodes)
            elif rank in links:
                problem = "node rank %d joined twice" % rank
            if problem:
                try:
                    link.send({"error": problem})
                finally:
                    conn.close()
                raise RendezvousError("RuntimeError: distributed init failed: " + problem)
            links[rank] = link
            log.info("Node rank %d joined from %s (%d/%d)" % (rank, addr[0], len(links) + 1, nnodes))
        for rank in sorted(links):
            links[rank].send({"ok": True, "nnodes": nnodes})
    except BaseException:
        for link in links.values():
            link.sock.close()
        raise
    finally:
        lsock.close()
    return [links[r] for r in sorted(links)]


def join_rank(host, port, node_rank, nnodes, tp, model, timeout_s, log, clock=time.monotonic):
    """Connect to rank 0 and wait for its go; return the link."""
    start = clock()
    sock = None
    while sock is None:
        try:
            sock = socket.create_connection((host, port), timeout=2.0)
        except OSError:
            if clock() - start >= timeout_s:
                raise RendezvousError(traceback_text(
                    [(PY + "/torch/distributed/rendezvous.py", 189, "_create_c10d_store", "")],
                    "torch.distributed.DistNetworkError: The client socket has timed out after %dms while "
                    "trying to connect to (%s, %d)." % (int(timeout_s * 1000), host, port)))
            time.sleep(0.2)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    link = Link(sock, "%s<%d>" % (host, port))
    link.send({"hello": MAGIC, "node_rank": node_rank, "nnodes": nnodes, "tp": tp, "model": model})
    log.info("Connected to node rank 0 at %s:%d, waiting for all %d nodes" % (host, port, nnodes))
    try:
        line = _readline(sock, link.buf, start + timeout_s)
    except (socket.timeout, OSError):
        sock.close()
        raise RendezvousError(traceback_text(
            [(PY + "/torch/distributed/rendezvous.py", 189, "_create_c10d_store", "")],
            "torch.distributed.DistStoreError: Timed out after %d seconds waiting for clients."
            % (int(timeout_s) + 1)))
    reply = None
    if line:
        try:
            reply = json.loads(line.decode("utf-8"))
        except ValueError:
            reply = None
    if not isinstance(reply, dict) or not reply.get("ok"):
        sock.close()
        why = reply.get("error") if isinstance(reply, dict) else "connection closed by node rank 0"
        raise RendezvousError("RuntimeError: distributed init failed: %s" % why)
    return link


def keep_alive(links, rank, heartbeat_s, peer_timeout_s, on_lost):
    """Heartbeat every link both ways in daemon threads; ``on_lost(message)`` on failure."""
    stop = threading.Event()
    fired = threading.Lock()

    def lost(link):
        if fired.acquire(blocking=False):
            on_lost(lost_message(rank, link.peer))

    def sender():
        while not stop.wait(heartbeat_s):
            for link in links:
                try:
                    link.send("hb")
                except OSError:
                    lost(link)
                    return

    def reader(link):
        while not stop.is_set():
            try:
                line = _readline(link.sock, link.buf, time.monotonic() + peer_timeout_s)
            except (socket.timeout, OSError):
                line = None
            if line is None:
                if not stop.is_set():
                    lost(link)
                return

    threading.Thread(target=sender, name="dist-heartbeat", daemon=True).start()
    for link in links:
        threading.Thread(target=reader, args=(link,), name="dist-reader", daemon=True).start()
    return stop

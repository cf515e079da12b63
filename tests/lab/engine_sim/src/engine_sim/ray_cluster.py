"""vLLM's Ray executor, simulated: join the running cluster, wait for TP x PP GPUs,
reserve them with a placement group, and watch the nodes that hold them.

Real Ray (``ray`` from PyPI) is used; nothing here runs on a GPU.
"""

from __future__ import annotations

import threading
import time

from .logs import PY, traceback_text


class RayStartError(Exception):
    """``str(exc)`` is the stderr text of the failure."""


def _ray():
    try:
        import ray  # noqa: F401  pylint: disable=import-outside-toplevel
    except ImportError:
        raise RayStartError(traceback_text(
            [(PY + "/vllm/executor/ray_utils.py", 291, "initialize_ray_cluster", "")],
            "ValueError: Ray is not installed. Please install Ray to use multi-node inference."))
    return ray


def gpu_total(ray):
    return float(ray.cluster_resources().get("GPU", 0.0))


def connect_and_wait(world_size, wait_s, log, poll_s=1.0, clock=time.monotonic):
    """Join the cluster (``address="auto"``) and wait until it reports ``world_size``
    GPUs, then reserve them. Returns ``(ray, placement_group, node_ids)``."""
    ray = _ray()
    try:
        ray.init(address="auto", ignore_reinit_error=True, logging_level="ERROR",
                 log_to_driver=False, include_dashboard=False)
    except Exception as exc:  # ConnectionError, RuntimeError: no running cluster
        raise RayStartError(traceback_text(
            [(PY + "/vllm/executor/ray_utils.py", 322, "initialize_ray_cluster",
              "ray.init(address=ray_address)"),
             (PY + "/ray/_private/worker.py", 1700, "init", "")],
            "%s: %s" % (type(exc).__name__, exc)))
    log.info("Connected to Ray cluster.", "ray_utils.py:326")
    start = clock()
    next_log = start
    specs = [{"GPU": 1.0}] * world_size
    while True:
        have = gpu_total(ray)
        if have >= world_size:
            break
        now = clock()
        if now - start >= wait_s:
            raise RayStartError(traceback_text(
                [(PY + "/vllm/executor/ray_utils.py", 402, "initialize_ray_cluster",
                  "_wait_until_pg_ready(current_placement_group)"),
                 (PY + "/vllm/executor/ray_utils.py", 228, "_wait_until_pg_ready", "raise ValueError(")],
                "ValueError: Cannot provide a placement group of placement_group_specs=%s within %d seconds. "
                "See `ray status` and `ray list nodes` to make sure the cluster has enough resources. "
                "(the cluster reports %g GPUs, %d are needed)" % (specs, int(wait_s), have, world_size)))
        if now >= next_log:
            log.info("Waiting for creating a placement group of specs for %d seconds. specs=%s. Check "
                     "`ray status` and `ray list nodes` to see if you have enough resources, and make sure "
                     "the IP addresses used by ray cluster are the same as VLLM_HOST_IP environment variable "
                     "specified in each node if you are running on a multi-node."
                     % (int(now - start), specs), "ray_utils.py:233")
            next_log = now + 10.0
        time.sleep(min(poll_s, max(0.05, wait_s - (now - start))))
    from ray.util.placement_group import placement_group, placement_group_table  # noqa
    pg = placement_group(specs, strategy="PACK")
    left = max(5.0, wait_s - (clock() - start))
    if not pg.wait(left):
        raise RayStartError(traceback_text(
            [(PY + "/vllm/executor/ray_utils.py", 228, "_wait_until_pg_ready", "raise ValueError(")],
            "ValueError: Cannot provide a placement group of placement_group_specs=%s within %d seconds. "
            "See `ray status` and `ray list nodes` to make sure the cluster has enough resources."
            % (specs, int(wait_s))))
    table = placement_group_table(pg)
    node_ids = sorted(set((table.get("bundles_to_node_id") or {}).values()))
    log.info("Placement group of %d GPU bundles ready on %d node(s)." % (world_size, len(node_ids)),
             "ray_distributed_executor.py:180")
    return ray, pg, node_ids


def dead_node_message(node):
    ip = node.get("NodeManagerAddress", "?")
    return traceback_text(
        [(PY + "/vllm/executor/ray_distributed_executor.py", 512, "_run_workers",
          "ray_worker_outputs = ray.get(ray_worker_outputs)"),
         (PY + "/ray/_private/worker.py", 2882, "get", "raise value")],
        "ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.\n"
        "\tclass_name: RayWorkerWrapper\n"
        "\tactor_id: %s\n"
        "\tpid: 0\n"
        "\tnamespace: vllm\n"
        "\tip: %s\n"
        "The actor is dead because its node has died. Node Id: %s\n"
        "\tthe actor's node was terminated unexpectedly: health check failed due to missing too many "
        "heartbeats" % (node.get("NodeID", "?")[:32], ip, node.get("NodeID", "?")))


def watch_nodes(ray, node_ids, poll_s, on_dead, stop_event=None):
    """Start a daemon thread polling ``ray.nodes()``; call ``on_dead(message)`` once when
    a node in ``node_ids`` is no longer alive or the cluster cannot be reached."""
    watched = set(node_ids)
    stop_event = stop_event or threading.Event()

    def loop():
        failures = 0
        while not stop_event.wait(poll_s):
            try:
                nodes = ray.nodes()
                failures = 0
            except Exception as exc:  # GCS gone
                failures += 1
                if failures >= 3:
                    on_dead(traceback_text(
                        [(PY + "/ray/_private/worker.py", 2882, "get", "")],
                        "ray.exceptions.RaySystemError: System error: lost connection to the Ray cluster "
                        "(GCS): %s" % exc))
                    return
                continue
            by_id = {n.get("NodeID"): n for n in nodes}
            for nid in watched:
                node = by_id.get(nid)
                if node is None or not node.get("Alive", False):
                    on_dead(dead_node_message(node or {"NodeID": nid}))
                    return

    thread = threading.Thread(target=loop, name="ray-node-watch", daemon=True)
    thread.start()
    return stop_event

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


# -- the driver's environment, copied to the Ray workers as vLLM 0.32 does ---------------------
# vllm/ray/ray_env.py get_env_vars_to_copy() and vllm/v1/executor/ray_executor.py: vLLM's
# registered variables (VLLM_API_KEY among them) and every variable with one of these prefixes,
# minus the worker-specific ones and the names listed in $VLLM_CONFIG_ROOT/ray_non_carry_over_env_vars.json,
# are sent to each worker (update_environment_variables: os.environ of the worker process, so
# inherited by every process it starts, e.g. torch's compile workers).
ENV_PREFIXES = ("VLLM_", "FLASH_ATTENTION_", "LMCACHE_", "NCCL_", "UCX_", "HF_", "HUGGING_FACE_")
REGISTERED = ("VLLM_API_KEY", "VLLM_HOST_IP", "VLLM_CONFIG_ROOT", "VLLM_LOGGING_LEVEL", "VLLM_USE_V1")
EXTRA = ("PYTHONHASHSEED",)
WORKER_SPECIFIC = {"VLLM_HOST_IP", "VLLM_HOST_PORT", "VLLM_NIXL_SIDE_CHANNEL_HOST", "LOCAL_RANK",
                   "CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"}


def config_root(environ):
    """vllm/envs.py VLLM_CONFIG_ROOT: $VLLM_CONFIG_ROOT, else $XDG_CONFIG_HOME/vllm, else ~/.config/vllm."""
    import os  # pylint: disable=import-outside-toplevel
    root = environ.get("VLLM_CONFIG_ROOT") or os.path.join(
        environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config"), "vllm")
    return os.path.expanduser(root)


def env_vars_to_copy(environ, log=None):
    """{name: value} the driver sends to its Ray workers (vLLM 0.32, V1 Ray executor)."""
    import json  # pylint: disable=import-outside-toplevel
    import os  # pylint: disable=import-outside-toplevel
    path = os.path.join(config_root(environ), "ray_non_carry_over_env_vars.json")
    try:
        with open(path) as fh:
            non_carry_over = set(json.load(fh))
    except (OSError, ValueError, TypeError):
        non_carry_over = set()
    names = set(REGISTERED) | set(EXTRA) | {n for n in environ if n.startswith(ENV_PREFIXES)}
    names -= WORKER_SPECIFIC | non_carry_over
    copied = {n: environ[n] for n in sorted(names) if n in environ}
    if log:
        log.info("Copying the following environment variables to workers: %s" % sorted(copied), "ray_env.py:91")
        if non_carry_over:
            log.info("RAY_NON_CARRY_OVER_ENV_VARS from config: %s" % sorted(non_carry_over), "ray_env.py:96")
    return copied


class RayWorkerWrapper(object):
    """A vLLM Ray worker, without a GPU: it takes the driver's variables into its own
    environment and starts a helper process, as a real worker's torch compile workers are
    started, which inherits them (visible in its /proc/PID/environ). The helper ends with
    the worker."""

    def __init__(self):
        self.helper = None

    def update_environment_variables(self, envs):
        import os  # pylint: disable=import-outside-toplevel
        import subprocess  # pylint: disable=import-outside-toplevel
        import sys  # pylint: disable=import-outside-toplevel
        os.environ.update(envs)
        if self.helper is None:
            self.helper = subprocess.Popen(
                [sys.executable, "-c", "import os, time\nparent = os.getppid()\n"
                 "while os.getppid() == parent:\n    time.sleep(1)\n", "compile_worker"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return {"ip": os.environ.get("VLLM_HOST_IP") or "", "pid": os.getpid(), "helper_pid": self.helper.pid}


_WORKERS = []  # the driver keeps its workers alive


def start_workers(ray, pg, log, environ):
    """One worker per node of the placement group (vLLM starts one per GPU; one per node shows
    what each host's workers get), each given the driver's variables."""
    from ray.util.placement_group import placement_group_table  # noqa pylint: disable=import-outside-toplevel
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy  # noqa pylint: disable=import-outside-toplevel
    bundles = (placement_group_table(pg).get("bundles_to_node_id") or {})
    first = {}
    for index, node in sorted(bundles.items()):
        first.setdefault(node, index)
    envs = env_vars_to_copy(environ, log)
    remote = ray.remote(RayWorkerWrapper)
    workers = [remote.options(num_cpus=0, num_gpus=1, scheduling_strategy=PlacementGroupSchedulingStrategy(
        placement_group=pg, placement_group_bundle_index=int(index))).remote() for index in sorted(first.values())]
    infos = ray.get([w.update_environment_variables.remote(envs) for w in workers], timeout=120)
    _WORKERS.extend(workers)
    log.info("Ray workers started on %d node(s): %s" % (len(infos), sorted(
        "pid %d (helper %d)" % (i["pid"], i["helper_pid"]) for i in infos)), "ray_executor.py:341")
    return infos

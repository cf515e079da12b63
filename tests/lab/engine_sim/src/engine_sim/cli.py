"""Entry points: ``vllm serve``, ``python3 -m vllm.entrypoints.openai.api_server``,
``python3 -m sglang.launch_server`` and ``llmfleet-engine-sim {vllm|sglang} ...``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time

import yaml
from aiohttp import web

from . import flags, logs
from .config import PREFIX, SimConfig
from .modelcheck import ModelDirError, check_model_dir
from .server import ServerSpec, SimServer

VLLM_SUBCOMMANDS = ("chat", "complete", "serve", "bench", "collect-env", "run-batch")


class Options(object):
    """The settings the simulator acts on, whatever the engine's flag names are."""

    def __init__(self, engine, version, values):
        self.engine = engine
        self.version = version
        self.values = values

    def get(self, *names, **kw):
        for name in names:
            val = self.values.get(name)
            if val is not None:
                return val
        return kw.get("default")

    def as_int(self, *names, **kw):
        val = self.get(*names, **kw)
        return None if val is None else int(val)


def _bool(val):
    if isinstance(val, str):
        return val.strip().lower() in ("1", "true", "yes", "on")
    return bool(val)


def _served_names(val, default):
    if val is None:
        return [default]
    if isinstance(val, (list, tuple)):
        return [str(v) for v in val] or [default]
    return [str(val)]


def _config_argv(path, prog):
    """SGLang ``--config FILE``: its YAML keys become flags (the command line wins)."""
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        flags.usage_exit(prog, "argument --config: cannot read %s: %s" % (path, exc))
    if not isinstance(data, dict):
        flags.usage_exit(prog, "argument --config: %s must hold a mapping of flag names to values" % path)
    argv = []
    for key, val in data.items():
        flag = "--" + str(key).replace("_", "-")
        if val is True:
            argv.append(flag)
        elif val is False or val is None:
            continue
        elif isinstance(val, list):
            argv.append(flag)
            argv.extend(str(v) for v in val)
        else:
            argv.extend([flag, str(val)])
    return argv


def _strip_config(argv):
    out, path, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
            i += 1
            continue
        out.append(arg)
        i += 1
    return out, path


def _parse(engine, argv, prog, cfg):
    version = cfg.engine_version or flags.default_version(engine)
    try:
        flags.check_version(engine, version)
    except flags.UsageError as exc:
        flags.usage_exit(prog, "%sENGINE_VERSION: %s" % (PREFIX, exc))
    argv, cfg_path = _strip_config(argv)
    if cfg_path:
        if engine == "sglang" and not cfg_path.endswith((".yaml", ".yml")):
            flags.usage_exit(prog, "argument --config: config file must be YAML (.yaml or .yml): %s" % cfg_path)
        argv = _config_argv(cfg_path, prog) + argv
    try:
        values = flags.parse(engine, version, argv)
    except flags.UsageError as exc:
        flags.usage_exit(prog, str(exc))
    return Options(engine, version, values)


def vllm_main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("--version", "-v"):
        cfg = SimConfig()
        print(cfg.engine_version or flags.default_version("vllm"))
        return 0
    if not argv or argv[0] not in VLLM_SUBCOMMANDS:
        sys.stderr.write("usage: vllm [-h] [-v] {%s} ...\nvllm: error: argument subparser: invalid choice: "
                         "%r (choose from %s)\n" % (",".join(VLLM_SUBCOMMANDS), argv[0] if argv else "",
                                                    ", ".join("'%s'" % c for c in VLLM_SUBCOMMANDS)))
        return 2
    if argv[0] != "serve":
        sys.stderr.write("vllm %s: not available in the llmfleet engine simulator\n" % argv[0])
        return 2
    return run("vllm", argv[1:], "vllm serve")


def vllm_api_server_main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    return run("vllm", argv, "api_server.py")


def sglang_main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    return run("sglang", argv, "launch_server.py")


def sim_main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "vllm":
        return vllm_main(argv[1:])
    if argv and argv[0] == "sglang":
        return sglang_main(argv[1:])
    sys.stderr.write("usage: llmfleet-engine-sim {vllm|sglang} ARGS...\n")
    return 2


# -- the run ---------------------------------------------------------------------------------

def bind_socket(host, port):
    """Bind the HTTP socket early, as vLLM does (so a taken port fails at once)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def run(engine, argv, prog):
    try:
        cfg = SimConfig()
    except ValueError as exc:
        sys.stderr.write("%s: error: %s\n" % (prog, exc))
        return 2
    opts = _parse(engine, argv, prog, cfg)
    log = logs.Log(engine)
    if engine == "sglang":
        model = opts.get("model_path")
    else:
        model = opts.get("model_tag", "model")
    if not model:
        flags.usage_exit(prog, "the following arguments are required: %s"
                         % ("--model-path" if engine == "sglang" else "model_tag"))
    host = opts.get("host") or ("127.0.0.1" if engine == "sglang" else "0.0.0.0")
    port = opts.as_int("port", default=30000 if engine == "sglang" else 8000)
    api_key = opts.get("api_key") or (os.environ.get("VLLM_API_KEY") if engine == "vllm" else None)
    if isinstance(api_key, (list, tuple)):      # vLLM 0.32: --api-key takes one or more keys
        api_key = [str(k) for k in api_key]
    served = _served_names(opts.get("served_model_name"), model)

    if engine == "vllm":
        log.info("vLLM API server version %s" % opts.version, "api_server.py:1805")
        shown = {k: v for k, v in sorted(opts.values.items()) if v not in (None, False, [], "")}
        if "api_key" in shown:
            shown["api_key"] = "***"
        log.info("non-default args: %s" % shown, "utils.py:328")
    else:
        # SGLang 0.5.x (sglang/srt/entrypoints/engine.py) logs its resolved arguments at INFO with
        # the keys in clear: logger.info(f"server_args={...}"), only the watermark secrets redacted
        log.info("server_args=%s" % {
            "model_path": model, "served_model_name": served[0], "host": host, "port": port,
            "tp_size": int(opts.get("tp_size", "tp", default=1)), "nnodes": int(opts.get("nnodes", default=1)),
            "node_rank": int(opts.get("node_rank", default=0)), "dist_init_addr": opts.get("dist_init_addr"),
            "api_key": api_key, "admin_api_key": opts.get("admin_api_key"),
            "enable_metrics": _bool(opts.get("enable_metrics", default=False))})

    if "port_in_use" in cfg.faults:
        logs.die(logs.port_in_use_message(engine))
    node_rank = opts.as_int("node_rank", default=0) if engine == "sglang" else 0
    sock = None
    if node_rank == 0:
        try:
            sock = bind_socket(host, port)
        except OSError as exc:
            if exc.errno == 98:
                logs.die(logs.port_in_use_message(engine))
            logs.die(logs.traceback_text([], "OSError: [Errno %s] %s" % (exc.errno, exc.strerror)))
    try:
        config = check_model_dir(model, engine)
    except ModelDirError as exc:
        if engine == "vllm":
            log.error("EngineCore failed to start.", "core.py:708")
        logs.die(str(exc))
    if engine == "vllm":
        log.info("Resolved architecture: %s" % ((config.get("architectures") or ["LlamaForCausalLM"])[0]),
                 "model.py:547")
        mml = opts.as_int("max_model_len") or int(config.get("max_position_embeddings") or 32768)
        log.info("Using max model len %d" % mml, "model.py:1510")
        max_seqs = opts.as_int("max_num_seqs") or 256
    else:
        mml = opts.as_int("context_length") or int(config.get("max_position_embeddings") or 32768)
        max_seqs = opts.as_int("max_running_requests") or 256
    spec = ServerSpec(engine, opts.version, model, served, mml, api_key, max_seqs,
                      enable_metrics=(engine == "vllm" or _bool(opts.get("enable_metrics", default=False))))
    try:
        return asyncio.run(_serve(engine, opts, cfg, spec, sock, host, port, log, node_rank))
    except KeyboardInterrupt:
        return 0


async def _serve(engine, opts, cfg, spec, sock, host, port, log, node_rank):
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stopped.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover
            pass
    t0 = time.monotonic()
    server = None
    runner = None
    if sock is not None:
        server = SimServer(spec, cfg, loop)
        runner = web.AppRunner(server.app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.SockSite(runner, sock).start()

    def fatal(message):
        loop.call_soon_threadsafe(logs.die, message)

    # distributed start
    if engine == "vllm":
        tp = opts.as_int("tensor_parallel_size", default=1)
        pp = opts.as_int("pipeline_parallel_size", default=1)
        world = tp * pp
        backend = opts.get("distributed_executor_backend")
        nnodes = opts.as_int("nnodes")
        if backend == "ray" or (world > cfg.local_gpus and backend in (None, "") and not nnodes):
            from . import ray_cluster
            log.info("Using Ray as the distributed executor: TP=%d x PP=%d = %d GPUs" % (tp, pp, world),
                     "ray_utils.py:300")
            try:
                ray, _pg, node_ids = await loop.run_in_executor(
                    None, ray_cluster.connect_and_wait, world, cfg.ray_wait_s, log)
            except ray_cluster.RayStartError as exc:
                logs.die(str(exc))
            try:
                await loop.run_in_executor(None, ray_cluster.start_workers, ray, _pg, log, dict(os.environ))
            except Exception as exc:  # pylint: disable=broad-except
                logs.die(logs.traceback_text(
                    [(logs.PY + "/vllm/v1/executor/ray_executor.py", 341, "_init_workers_ray", "")],
                    "%s: %s" % (type(exc).__name__, exc)))
            ray_cluster.watch_nodes(ray, node_ids, cfg.ray_poll_s, fatal)
        elif world > cfg.local_gpus and not nnodes:
            logs.die(logs.traceback_text(
                [(logs.PY + "/vllm/config/parallel.py", 528, "__post_init__", "raise ValueError(")],
                "ValueError: World size (%d) is larger than the number of available GPUs (%d) in this node. "
                "If this is intentional and you are using: - ray, set '--distributed-executor-backend ray'. "
                "- multiprocessing, set '--nnodes' appropriately." % (world, cfg.local_gpus)))
    else:
        nnodes = opts.as_int("nnodes", default=1)
        if nnodes > 1:
            from . import rendezvous as rdv
            tp = opts.as_int("tp_size", "tp", default=1)
            addr = opts.get("dist_init_addr")
            if not addr:
                logs.die("ValueError: --dist-init-addr is required when --nnodes > 1")
            try:
                dhost, dport = rdv.split_addr(addr)
                if node_rank == 0:
                    links = await loop.run_in_executor(None, rdv.serve_rank0, dhost, dport, nnodes, tp,
                                                       cfg.dist_init_timeout_s, log)
                else:
                    links = [await loop.run_in_executor(None, rdv.join_rank, dhost, dport, node_rank, nnodes,
                                                        tp, spec.model_path, cfg.dist_init_timeout_s, log)]
            except rdv.RendezvousError as exc:
                logs.die(str(exc))
            log.info("Distributed init done: node rank %d of %d" % (node_rank, nnodes))
            rdv.keep_alive(links, node_rank, cfg.heartbeat_s, cfg.peer_timeout_s, fatal)

    # "loading the weights"
    left = cfg.load_delay_s - (time.monotonic() - t0)
    if left > 0:
        try:
            await asyncio.wait_for(stopped.wait(), left)
            return 0
        except asyncio.TimeoutError:
            pass
    if engine == "vllm":
        log.info("Loading weights took %.2f seconds" % max(0.0, left), "default_loader.py:267")
    if "oom" in cfg.faults:
        logs.die(logs.oom_message(engine, 1))
    if "nccl" in cfg.faults:
        logs.die(logs.nccl_message(engine, node_rank, 8))
    if "hang" in cfg.faults:
        log.info("Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): 0%|          | 0/67", "gpu_model_runner.py:3480")
        await stopped.wait()
        return 0

    if server is not None:
        url = "http://%s:%d" % (host if ":" not in host else "[%s]" % host, port)
        if engine == "vllm":
            log.info("Starting vLLM API server 0 on %s" % url, "launcher.py:44")
            log.info("Available routes are:", "launcher.py:37")
            for path, methods in server.routes:
                log.info("Route: %s, Methods: %s" % (path, ", ".join(methods)), "launcher.py:45")
            log.uvicorn("Started server process [%d]" % os.getpid())
            log.uvicorn("Waiting for application startup.")
            log.uvicorn("Application startup complete.")
        else:
            log.uvicorn("Started server process [%d]" % os.getpid())
            log.uvicorn("Waiting for application startup.")
            log.uvicorn("Application startup complete.")
            log.uvicorn("Uvicorn running on %s (Press CTRL+C to quit)" % url)
            log.info("The server is fired up and ready to roll!")
        server.ready = True
    else:
        log.info("Node rank %d is ready (no HTTP server on ranks > 0)" % node_rank)

    crash = cfg.faults.get("crash_after_s")
    if crash is not None:
        loop.call_later(crash, logs.die, logs.crash_message(engine))
    await stopped.wait()
    if engine == "vllm":
        log.info("Shutting down FastAPI HTTP server.", "launcher.py:110")
    else:
        log.uvicorn("Shutting down")
    if runner is not None:
        await runner.cleanup()
    return 0

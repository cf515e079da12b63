"""Log lines in the style of vLLM / SGLang, and fatal exits with real-looking tracebacks."""

from __future__ import annotations

import logging
import os
import sys
import time


class Log(object):
    """``(APIServer pid=N) INFO 11-23 10:35:01 [file.py:123] msg`` (vLLM) or
    ``[2025-11-23 10:35:01] msg`` (SGLang) on stdout, flushed per line.

    SGLang's lines go through Python's ``logging`` as in SGLang (``logging.basicConfig(force=True)``
    with the format ``[%(asctime)s] %(message)s``, logger ``sglang.srt.entrypoints.engine``), so
    whatever a launcher does to SGLang's logging applies to the simulator the same way."""

    def __init__(self, engine, process="APIServer"):
        self.engine = engine
        self.process = process
        self.pid = os.getpid()
        self.logger = None
        if engine == "sglang":
            logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s",
                                datefmt="%Y-%m-%d %H:%M:%S", force=True, stream=sys.stdout)
            self.logger = logging.getLogger("sglang.srt.entrypoints.engine")

    def _line(self, level, where, msg):
        now = time.localtime()
        if self.engine == "sglang":
            return "[%s] %s" % (time.strftime("%Y-%m-%d %H:%M:%S", now), msg)
        return "(%s pid=%d) %s %s [%s] %s" % (
            self.process, self.pid, level, time.strftime("%m-%d %H:%M:%S", now), where, msg)

    def info(self, msg, where="api_server.py:1881"):
        if self.logger:
            self.logger.info(msg)
            return
        sys.stdout.write(self._line("INFO", where, msg) + "\n")
        sys.stdout.flush()

    def warning(self, msg, where="api_server.py:1881"):
        if self.logger:
            self.logger.warning(msg)
            return
        sys.stdout.write(self._line("WARNING", where, msg) + "\n")
        sys.stdout.flush()

    def error(self, msg, where="core.py:708"):
        sys.stderr.write(self._line("ERROR", where, msg) + "\n")
        sys.stderr.flush()

    def uvicorn(self, msg):
        sys.stdout.write("INFO:     %s\n" % msg)
        sys.stdout.flush()


def traceback_text(frames, final):
    """A Python-style traceback: ``frames`` is a list of (file, line, func, code)."""
    out = ["Traceback (most recent call last):"]
    for fname, line, func, code in frames:
        out.append('  File "%s", line %d, in %s' % (fname, line, func))
        if code:
            out.append("    " + code)
    out.append(final)
    return "\n".join(out)


def die(message, code=1):
    """Write ``message`` to stderr and end the process at once (no cleanup handlers:
    a crashing engine does not shut down gracefully either)."""
    try:
        sys.stdout.flush()
    except Exception:  # pragma: no cover - stdout closed
        pass
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()
    os._exit(code)


PY = "/usr/local/lib/python3.12/dist-packages"


def oom_message(engine, tp):
    if engine == "sglang":
        frames = [
            (PY + "/sglang/srt/managers/scheduler.py", 2511, "run_scheduler_process",
             "scheduler = Scheduler(server_args, port_args, gpu_id, tp_rank, moe_ep_rank, pp_rank, dp_rank)"),
            (PY + "/sglang/srt/model_executor/model_runner.py", 412, "init_memory_pool",
             "self.req_to_token_pool = ReqToTokenPool("),
            (PY + "/torch/utils/_device.py", 104, "__torch_function__", "return func(*args, **kwargs)"),
        ]
    else:
        frames = [
            (PY + "/vllm/v1/engine/core.py", 83, "__init__",
             "self._initialize_kv_caches(vllm_config)"),
            (PY + "/vllm/v1/worker/gpu_worker.py", 262, "determine_available_memory",
             "self.model_runner.profile_run()"),
            (PY + "/vllm/v1/worker/gpu_model_runner.py", 3412, "_dummy_run",
             "outputs = self.model("),
            (PY + "/torch/nn/modules/module.py", 1775, "_call_impl", "return forward_call(*args, **kwargs)"),
        ]
    final = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.75 GiB. GPU 0 has a total "
             "capacity of 79.19 GiB of which 1.02 GiB is free. Including non-PyTorch memory, this process "
             "has 78.16 GiB memory in use. Of the allocated memory 75.31 GiB is allocated by PyTorch, and "
             "1.42 GiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large "
             "try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See "
             "documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html"
             "#environment-variables)")
    text = traceback_text(frames, final)
    if engine != "sglang":
        text = ("ERROR [core.py:708] EngineCore failed to start.\n" + text +
                "\nRuntimeError: Engine core initialization failed. See root cause above. "
                "Failed core proc(s): {'EngineCore_DP0': 1}")
    return text


def nccl_message(engine, rank=0, world=8):
    frames = [
        (PY + "/torch/distributed/c10d_logger.py", 81, "wrapper", "return func(*args, **kwargs)"),
        (PY + "/torch/distributed/distributed_c10d.py", 2806, "all_reduce", "work.wait()"),
    ]
    final = ("torch.distributed.DistBackendError: [Rank %d] Watchdog caught collective operation timeout: "
             "WorkNCCL(SeqNum=1, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, Timeout(ms)=600000) ran for "
             "600013 milliseconds before timing out.\n"
             "[rank%d]:[E ProcessGroupNCCL.cpp:1895] [PG ID 0 PG GUID 0(default_pg) Rank %d] Process group "
             "watchdog thread terminated with exception: NCCL error: remote process exited or there was a "
             "network error, NCCL version 2.27.3\nncclRemoteError: A call failed possibly due to a network "
             "error or a remote process exiting prematurely.\nLast error:\nsocketProgress: Connection closed "
             "by remote peer (world size %d)" % (rank, rank, rank, world))
    return traceback_text(frames, final)


def port_in_use_message(engine):
    if engine == "sglang":
        frames = [(PY + "/uvicorn/server.py", 164, "startup",
                   "server = await loop.create_server(")]
    else:
        frames = [
            (PY + "/vllm/entrypoints/openai/api_server.py", 1901, "run_server",
             "listen_address, sock = setup_server(args)"),
            (PY + "/vllm/entrypoints/openai/api_server.py", 1868, "setup_server",
             "sock = create_server_socket(sock_addr)"),
            (PY + "/vllm/entrypoints/openai/api_server.py", 1802, "create_server_socket",
             "sock.bind(addr)"),
        ]
    return traceback_text(frames, "OSError: [Errno 98] Address already in use")


def crash_message(engine):
    if engine == "sglang":
        return ("[%s] Scheduler hit an exception: Traceback (most recent call last):\n"
                "RuntimeError: CUDA error: an illegal memory access was encountered\n"
                "Received sigquit from a child process. It usually means the child failed."
                % time.strftime("%Y-%m-%d %H:%M:%S"))
    return ("ERROR [core.py:717] EngineCore encountered a fatal error.\n" +
            traceback_text(
                [(PY + "/vllm/v1/engine/core.py", 708, "run_engine_core", "engine_core.run_busy_loop()")],
                "RuntimeError: CUDA error: an illegal memory access was encountered") +
            "\nERROR [async_llm.py:480] AsyncLLM output_handler failed.\n"
            "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. "
            "See stack trace (above) for the root cause.")

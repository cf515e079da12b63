# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test data: realistic vLLM / SGLang / Ray failure log excerpts (shapes as these engines print
them; paths, pids and sizes made up)."""

from __future__ import annotations

VLLM_CUDA_OOM = """\
INFO 11-23 07:41:02 [gpu_model_runner.py:1843] Starting to load model /data/models/QwQ-32B...
INFO 11-23 07:41:40 [default_loader.py:262] Loading weights took 37.52 seconds
INFO 11-23 07:41:41 [gpu_model_runner.py:1892] Model loading took 61.0373 GiB and 38.114 seconds
ERROR 11-23 07:41:45 [core.py:700] EngineCore failed to start.
ERROR 11-23 07:41:45 [core.py:700] Traceback (most recent call last):
ERROR 11-23 07:41:45 [core.py:700]   File "/usr/local/lib/python3.12/dist-packages/vllm/v1/engine/core.py", line 691, in run_engine_core
ERROR 11-23 07:41:45 [core.py:700]     engine_core = EngineCoreProc(*args, **kwargs)
ERROR 11-23 07:41:45 [core.py:700] torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.75 GiB. GPU 0 has a total capacity of \
79.19 GiB of which 1.02 GiB is free. Process 2154 has 78.16 GiB memory in use. Of the allocated memory 76.12 GiB is allocated by PyTorch, \
and 1.21 GiB is reserved by PyTorch but unallocated.
Process EngineCore_0:
Traceback (most recent call last):
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
"""

VLLM_KV_CACHE = """\
INFO 11-23 07:43:10 [kv_cache_utils.py:833] GPU KV cache size: 9,632 tokens
ERROR 11-23 07:43:10 [core.py:700] ValueError: To serve at least one request with the models's max seq len (131072), (16.00 GiB KV cache is \
needed, which is larger than the available KV cache memory (9.45 GiB). Based on the available memory, the estimated maximum model length is \
77392. Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.
"""

NCCL_WATCHDOG = """\
INFO 11-23 07:50:01 [parallel_state.py:1102] rank 1 in world size 16 is assigned as DP rank 0, PP rank 0, TP rank 1
[rank1]:[E1123 07:52:11.123456789 ProcessGroupNCCL.cpp:632] [Rank 1] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=3, \
OpType=ALLREDUCE, NumelIn=1, NumelOut=1, Timeout(ms)=600000) ran for 600043 milliseconds before timing out.
[rank1]:[E1123 07:52:11.124012345 ProcessGroupNCCL.cpp:2168] [PG ID 0 PG GUID 0(default_pg) Rank 1] failure detected by watchdog at work \
sequence id: 3 PG status: last enqueued work: 3, last completed work: 2
terminate called after throwing an instance of 'c10::DistBackendError'
"""

RAY_ACTOR_DIED = """\
INFO 11-23 07:54:30 [ray_distributed_executor.py:176] use_ray_spmd_worker: True
(RayWorkerWrapper pid=1873, ip=10.0.0.12) INFO 11-23 07:54:50 [default_loader.py:262] Loading weights took 80.11 seconds
ERROR 11-23 07:55:03 [core.py:700] ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.
\tclass_name: RayWorkerWrapper
\tactor_id: 8d3c2f0e5a9b7c1d0a00000001000000
\tpid: 1873
\tip: 10.0.0.12
The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a \
connection error code 2. End of file.
"""

MISSING_SHARD = """\
INFO 11-23 08:00:40 [gpu_model_runner.py:1843] Starting to load model /data/models/DeepSeek-R1...
Loading safetensors checkpoint shards:  25% Completed | 41/163 [00:31<01:34,  1.29it/s]
ERROR 11-23 08:01:12 [core.py:700]   File "/usr/local/lib/python3.12/dist-packages/vllm/model_executor/model_loader/weight_utils.py", line \
494, in safetensors_weights_iterator
ERROR 11-23 08:01:12 [core.py:700]     with safe_open(st_file, framework="pt") as f:
ERROR 11-23 08:01:12 [core.py:700] FileNotFoundError: [Errno 2] No such file or directory: \
'/data/models/DeepSeek-R1/model-00042-of-000163.safetensors'
"""

PORT_IN_USE = """\
INFO 11-23 08:05:00 [api_server.py:1885] vLLM API server version 0.32.0
INFO:     Started server process [1]
INFO:     Waiting for application startup.
INFO:     Application startup complete.
ERROR:    [Errno 98] error while attempting to bind on address ('0.0.0.0', 8000): address already in use
INFO:     Waiting for application shutdown.
"""

SGLANG_UNKNOWN_FLAG = """\
usage: launch_server.py [-h] --model-path MODEL_PATH [--tokenizer-path TOKENIZER_PATH]
                        [--host HOST] [--port PORT] [--tp-size TP_SIZE]
launch_server.py: error: unrecognized arguments: --enable-reasoning
"""

SGLANG_OOM = """\
[2026-11-23 08:10:01 TP3] Load weight end. type=DeepseekV3ForCausalLM, dtype=torch.bfloat16, avail mem=3.21 GB
[2026-11-23 08:10:02 TP3] Scheduler hit an exception: Traceback (most recent call last):
  File "/sgl-workspace/sglang/python/sglang/srt/managers/scheduler.py", line 2401, in run_scheduler_process
RuntimeError: Not enough memory. Please try to increase --mem-fraction-static.
"""

GENERIC_CRASH = """\
INFO 11-23 08:20:00 [api_server.py:1885] vLLM API server version 0.32.0
Traceback (most recent call last):
  File "/usr/local/bin/vllm", line 8, in <module>
KeyError: 'architectures'
"""

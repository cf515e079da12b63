"""Simulator settings from ``LLMFLEET_SIM_*`` environment variables.

Every variable is listed, with its default, in docs/engine-simulator.md; keep both in step.
"""

from __future__ import annotations

import os

PREFIX = "LLMFLEET_SIM_"

# name -> (type, default, help)
ENV_VARS = {
    "ENGINE_VERSION": (str, "", "engine version to emulate (flag table, /version); default: newest in the table"),
    "LOAD_DELAY_S": (float, 2.0, "seconds from start until /health is 200 (model 'loading')"),
    "TTFT_BASE_MS": (float, 20.0, "prefill time of a request, fixed part (ms)"),
    "TTFT_PER_PROMPT_TOKEN_MS": (float, 0.02, "prefill time per prompt token (ms)"),
    "ITL_BASE_MS": (float, 10.0, "time between two output chunks of one request with nothing else running (ms)"),
    "ITL_PER_RUNNING_MS": (float, 0.05, "extra inter-token time per other running request (ms)"),
    "MAX_NUM_SEQS": (int, 0, "running-request cap (0: --max-num-seqs / --max-running-requests, else 256)"),
    "TOKENS_PER_CHUNK": (int, 1, "tokens per streamed chunk and per decode step (>1 emulates speculative decoding)"),
    "KV_CACHE_TOKENS": (int, 262144, "KV-cache capacity in tokens, for the KV-cache usage gauge"),
    "EOS_AFTER": (int, 0, "stop (finish_reason stop) after this many tokens unless ignore_eos; 0: never"),
    "DEFAULT_MAX_TOKENS": (int, 128, "tokens generated when a request sets no max_tokens (ends with stop)"),
    "FAIL": (str, "", "fault injection, comma separated: oom, nccl, port_in_use, hang, crash_after_s=N"),
    "LOCAL_GPUS": (int, 8, "GPUs of this node (decides when vLLM needs Ray)"),
    "RAY_WAIT_S": (float, 120.0, "how long vLLM waits for Ray to report TP x PP GPUs"),
    "RAY_POLL_S": (float, 1.0, "Ray node watch period while serving"),
    "DIST_INIT_TIMEOUT_S": (float, 300.0, "SGLang: how long ranks wait for each other at --dist-init-addr"),
    "PEER_TIMEOUT_S": (float, 10.0, "SGLang: a peer silent this long counts as lost"),
    "HEARTBEAT_S": (float, 1.0, "SGLang: heartbeat period between ranks"),
    "SCHEDULER": (str, "", "token clock: timerfd (default on Linux) or sleep (portable fallback)"),
}


class SimConfig(object):
    """Attribute access to the settings, e.g. ``cfg.itl_base_ms``."""

    def __init__(self, environ=None):
        env = os.environ if environ is None else environ
        for name, (typ, default, _help) in ENV_VARS.items():
            raw = env.get(PREFIX + name)
            if raw is None or raw.strip() == "":
                value = default
            else:
                try:
                    value = typ(raw.strip())
                except ValueError:
                    raise ValueError("%s%s=%r is not a valid %s" % (PREFIX, name, raw, typ.__name__))
                if typ in (int, float) and value < 0:
                    raise ValueError("%s%s=%r must not be negative" % (PREFIX, name, raw))
            setattr(self, name.lower(), value)
        if self.tokens_per_chunk < 1:
            raise ValueError("%sTOKENS_PER_CHUNK must be at least 1" % PREFIX)
        self.faults = parse_faults(self.fail)

    def ttft_s(self, prompt_tokens):
        return (self.ttft_base_ms + self.ttft_per_prompt_token_ms * prompt_tokens) / 1000.0

    def itl_s(self, running):
        return (self.itl_base_ms + self.itl_per_running_ms * max(0, running - 1)) / 1000.0


KNOWN_FAULTS = ("oom", "nccl", "port_in_use", "hang", "crash_after_s")


def parse_faults(spec):
    """``"oom,crash_after_s=5"`` -> ``{"oom": True, "crash_after_s": 5.0}``."""
    faults = {}
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, val = item.partition("=")
        name = name.strip().lower()
        if name not in KNOWN_FAULTS:
            raise ValueError("%sFAIL: unknown fault %r (known: %s)" % (PREFIX, name, ", ".join(KNOWN_FAULTS)))
        if name == "crash_after_s":
            try:
                faults[name] = float(val)
            except ValueError:
                raise ValueError("%sFAIL: crash_after_s needs a number of seconds, got %r" % (PREFIX, val))
        else:
            faults[name] = True
    return faults

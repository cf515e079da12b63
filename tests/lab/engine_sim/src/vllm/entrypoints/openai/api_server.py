"""Simulator shim for ``python3 -m vllm.entrypoints.openai.api_server --model DIR ...``."""
import sys

from engine_sim.cli import vllm_api_server_main

if __name__ == "__main__":
    sys.exit(vllm_api_server_main())

"""Simulator shim for ``python3 -m sglang.launch_server --model-path DIR ...``."""
import sys

from engine_sim.cli import sglang_main

if __name__ == "__main__":
    sys.exit(sglang_main())

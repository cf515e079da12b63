"""llmfleet engine simulator: a GPU-less stand-in for vLLM and SGLang servers.

See docs/engine-simulator.md in the llmfleet.serving collection.
"""
__version__ = "0.1.0"

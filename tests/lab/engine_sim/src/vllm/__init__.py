"""Shim package of the llmfleet engine simulator: NOT the real vLLM.

It exists so that ``python3 -m vllm.entrypoints.openai.api_server`` works in the lab's
engine image; every entry point forwards to :mod:`engine_sim`.
"""
__version__ = "0.0.0+llmfleet.sim"

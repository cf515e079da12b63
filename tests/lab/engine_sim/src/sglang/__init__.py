"""Shim package of the llmfleet engine simulator: NOT the real SGLang.

It exists so that ``python3 -m sglang.launch_server`` works in the lab's engine image.
"""
__version__ = "0.0.0+llmfleet.sim"

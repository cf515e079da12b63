"""The llmfleet lab: GPU-less hosts in containers, reached over SSH (see docs/lab.md)."""

"""Step executors: plain Python classes that run one step attempt. No Django here; see steps.registry."""

from __future__ import annotations

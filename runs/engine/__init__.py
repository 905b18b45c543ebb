"""Execution decisions: plain Python, no Django. Given states, say what happens next."""

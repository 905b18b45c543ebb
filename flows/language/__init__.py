"""The native definition language: parse, validate and compile workflows. Pure Python, no Django."""

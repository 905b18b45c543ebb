"""Which earlier steps' outputs a step reads: the ones it needs and the ones its templates name."""

from __future__ import annotations

from flows.language.spec import WorkflowSpec
from flows.language.templates import references, template_strings

_CACHE: dict[tuple[str, str], frozenset[str]] = {}
_CACHE_LIMIT = 20_000


def step_reads(content_hash: str, spec: WorkflowSpec, name: str) -> frozenset[str]:
    """Cached per (definition content, step): the same content always reads the same steps."""
    key = (content_hash, name)
    reads = _CACHE.get(key)
    if reads is None:
        if len(_CACHE) > _CACHE_LIMIT:
            _CACHE.clear()
        reads = _CACHE[key] = _compute(spec, name)
    return reads


def _compute(spec: WorkflowSpec, name: str) -> frozenset[str]:
    step = spec.step(name)
    names = {s.name for s in spec.steps}
    aliases = {n.replace("-", "_"): n for n in names}
    from steps.registry import LANGUAGE_CHECKS

    raw = LANGUAGE_CHECKS.raw_keys.get(step.type, frozenset())
    reads = set(step.needs)
    sources = [source for path, source in template_strings(dict(step.config)) if path[0] not in raw]
    if step.for_each is not None:
        sources += [source for _, source in template_strings(dict(step.for_each.over))]
    if isinstance(step.when, str):
        sources.append(step.when if "{{" in step.when else "{{ " + step.when + " }}")
    for source in sources:
        for ref in references(source).steps:
            target = ref if ref in names else aliases.get(ref)
            if target:
                reads.add(target)
    return frozenset(reads)

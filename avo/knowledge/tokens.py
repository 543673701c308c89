"""A code-aware tokenizer shared by indexing and querying (both sides must agree exactly).

Identifiers are kept whole *and* split into their snake_case / CamelCase parts, so a query for
"producer acquire" finds `producer_acquire` and a query for `PipelineTmaAsync` finds that class
without also needing the words spelt the same way. Everything is lowercased and lightly
de-pluralised ("stages" == "stage"); digits stay attached to their word ("exp2", "sm90", "bf16")
because in this domain they carry the meaning.
"""

from __future__ import annotations

import re

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")
_LOWER_UPPER = re.compile(r"([a-z0-9])([A-Z])")
_ACRONYM_WORD = re.compile(r"([A-Z]+)([A-Z][a-z])")

# Words that occur everywhere in prose or in every CuTe DSL signature (`loc`, `ip`) and so only
# dilute the ranking. BM25's idf would shrink them anyway; dropping them keeps the index smaller.
STOPWORDS = frozenset(
    """
    a an the and or not of to in on at by for from with as is are be been was were it its this that
    these those there here we you they he she our your their if then else than so do does did can
    could should would will may might must has have had into out over under about also only just
    more most some any each every such via per which what when where who how all no yes one two
    self cls def return none true false import class pass elif lambda yield await raise try
    except finally while loc ip kwargs args str int bool float list dict tuple optional any type
    """.split()
)


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith("sses"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _keep(word: str) -> bool:
    return len(word) > 1 and word not in STOPWORDS


def split_identifier(ident: str) -> list[str]:
    """`PipelineTmaAsync` -> [pipeline, tma, async]; `num_stages` -> [num, stages]; lowercased."""
    parts: list[str] = []
    for piece in ident.split("_"):
        if not piece:
            continue
        spaced = _ACRONYM_WORD.sub(r"\1 \2", _LOWER_UPPER.sub(r"\1 \2", piece))
        parts.extend(p.lower() for p in spaced.split())
    return parts


def tokenize(text: str) -> list[str]:
    """Index/query terms of `text`, in order, with repeats (BM25 counts term frequency)."""
    out: list[str] = []
    for match in _IDENT.finditer(text):
        ident = match.group()
        parts = split_identifier(ident)
        whole = "_".join(parts)
        if len(parts) > 1 and _keep(whole):
            out.append(_stem(whole))
        for part in parts:
            if _keep(part):
                out.append(_stem(part))
    return out


def identifiers(text: str) -> list[str]:
    """Normalised compound identifiers in `text` (`PipelineTmaAsync` -> pipeline_tma_async,
    `make_trivial_tiled_mma`), for exact-name matching. Plain words are not names: "store" in a
    query should not favour every function called store. A text that is one word alone is the
    exception (a query "fence" asks for `fence`)."""
    found = [split_identifier(m.group()) for m in _IDENT.finditer(text)]
    found = [p for p in found if p]
    if len(found) == 1 and len(found[0]) == 1:
        return found[0] if _keep(found[0][0]) else []
    return ["_".join(p) for p in found if len(p) > 1]


# The same thing under the names PTX, the DSL and the literature give it; a query term also
# searches for its aliases. Only true renames belong here, not related concepts.
ALIASES = {
    "setmaxnreg": ("setmaxregister",),
    "setmaxregister": ("setmaxnreg",),
    "umma": ("tcgen05",),
    "tcgen05": ("umma",),
    "mbarrier": ("mbar",),
}


def query_terms(text: str) -> list[str]:
    """Distinct terms of a query and their aliases, in order (a repeated word counts once)."""
    terms: list[str] = []
    for term in tokenize(text):
        terms.append(term)
        terms.extend(ALIASES.get(term, ()))
    return list(dict.fromkeys(terms))

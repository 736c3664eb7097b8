"""Held-out wordings of the colour task: the same conflicts (images, answers, groups, splits), each question and
statement said another way with words the datasets already use, so a model's word-level vocabulary covers them.

A method trained on the default wording and measured on these shows whether what it learned carries to a form it
never saw (issue "compare methods": transfer).

    What color is the circle?                    ->  What is the color of the circle?
    The circle is red.                           ->  There is a red circle.
    The circle's color is the same as a leaf.    ->  The circle is the same color as a leaf.
    The circle's color is the same as a cup. The cup is red.  ->  The cup is red. The circle is the same color as the cup.
"""
from __future__ import annotations

import re

from .palette import with_article
from .store import ConflictData

QUESTION = (re.compile(r"^What color is the (.+?)\?"), r"What is the color of the \1?")
STATEMENTS = [
    (re.compile(r"^The (.+?)'s color is the same as (an? )?(.+?)\. The \3 is (.+?)\.$"),
     lambda m: f"The {m[3]} is {m[4]}. The {m[1]} is the same color as the {m[3]}."),
    (re.compile(r"^The (.+?)'s color is the same as (.+?)\.$"), lambda m: f"The {m[1]} is the same color as {m[2]}."),
    (re.compile(r"^The (.+?) is (\w+)\.$"), lambda m: f"There is {with_article(m[2])} {m[1]}."),
]


def paraphrase_statement(text: str) -> str:
    """The statement in its held-out wording; an empty text stays empty. A statement no rule knows is an error."""
    if not text:
        return text
    for pattern, rewrite in STATEMENTS:
        m = pattern.match(text)
        if m:
            return rewrite(m)
    raise ValueError(f"no held-out wording for the statement {text!r}: the paraphrase rules cover the colour task's "
                     f"text tiers (data_gen/colors.py text_context)")


def paraphrase_question(text: str) -> str:
    pattern, rewrite = QUESTION
    out, n = pattern.subn(rewrite, text)
    if not n:
        raise ValueError(f"no held-out wording for the question {text!r}: the rule covers 'What color is the X?'")
    return out


def paraphrased(data: ConflictData) -> ConflictData:
    """`data` with every question and statement in its held-out wording (same images, ids, answers, splits)."""
    samples = data.samples.map(lambda r: {"question": paraphrase_question(r["question"]),
                                          "text_context": paraphrase_statement(r["text_context"] or "")})
    return ConflictData(samples, data.images, {**data.info, "wording": "paraphrase"})

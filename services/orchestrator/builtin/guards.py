"""Honesty: filters guessed from names, empty-value filters, and the checks that refuse rather than guess."""

from __future__ import annotations

import re

from services.orchestrator.builtin import compose as c
from services.orchestrator.builtin.context import _Ctx, _free, _is_count_question
from services.orchestrator.builtin.lexicon import STOP_STEMS
from services.orchestrator.builtin.question import Filter, Question
from services.orchestrator.builtin.schema import Schema, literal
from services.orchestrator.builtin.text import same_word, stem
from services.orchestrator.plan import Answer, StepResults

_NULL_BEFORE = re.compile(
    r"(?<!non-)(?<!non )\b(no|without|missing|null( values)?( in)?|empty|lack(ing)?"
    r"|not have( an?| any)?)\s+$"
)


def _null_filters(ctx: _Ctx) -> None:
    q = ctx.q
    for lk in _free(ctx):
        head = q.low[: q.tokens[lk.start].start]
        if _NULL_BEFORE.search(head) and lk.column.flag_values is None:
            col = lk.column
            sql = f"({col.sql} IS NULL OR trim({col.sql}::VARCHAR) IN ('', '[]'))"
            q.filters.append(Filter(col, sql, f"`{col.name}` is empty", lk.start, lk.end))
            q.used.update(range(lk.start, lk.end))
        elif re.search(
            r"\bnon[- ]?(null|empty)\s+$|\bnot (null|empty)\s+$|\b(a |an )?valid\s+$", head
        ) or re.search(
            r"^\s*((is|are)?\s*not (null|empty)|(is |are )?(set|filled|filled in|recorded)\b)",
            q.low[q.tokens[lk.end - 1].end :],
        ):
            col = lk.column
            rate = re.search(r"\b(share|percentage|proportion|rate|fraction)\b", q.low) is not None
            if (_is_count_question(q) or rate or q.answer_type == "boolean") and not q.distinct:
                sql = f"({col.sql} IS NOT NULL AND trim({col.sql}::VARCHAR) NOT IN ('', '[]'))"
                q.filters.append(Filter(col, sql, f"`{col.name}` is not empty", lk.start, lk.end))
                q.used.update(range(lk.start, lk.end))


_CONTAINS = re.compile(
    r"\b(related to|containing|contains?|that contains?|mentioning|mentions?|with the word|including"
    r"|about)\s+"
    r"(the\s+)?['\"]?(?P<word>[a-z][a-z-]{2,})"
)


def _contains_filters(ctx: _Ctx) -> None:
    """ "a name related to attractions": a text column that contains the word (a LIKE on its stem)."""
    q = ctx.q
    for m in _CONTAINS.finditer(q.low):
        at = q.index_at(m.start())
        word_index = q.index_at(m.start("word"))
        if q.links.covered(word_index) or word_index in q.used:
            continue
        link = next(
            (lk for lk in reversed(_free(ctx)) if lk.end <= at and at - lk.end <= 2 and lk.column.textual),
            None,
        )
        if link is None:
            continue
        col, word = link.column, stem(m.group("word"))
        q.filters.append(
            Filter(
                col,
                f"lower({col.sql}) LIKE {literal('%' + word + '%')}",
                f"`{col.name}` contains “{word}”",
                at,
                word_index + 1,
            )
        )
        q.used.update(range(link.start, word_index + 1))


def _entity_filters(ctx: _Ctx) -> None:
    """Capitalized words the profile does not know ("Iceland"): a match on the most name-like text column."""
    q = ctx.q
    if not q.links.entities and not q.links.quoted:
        return
    text_cols = [col for col in ctx.schema.columns if col.textual]
    if not text_cols:
        return
    for start, end, text in q.links.quoted:
        if any(f.start >= start and f.end <= end + 1 for f in q.filters if f.start >= 0):
            continue
        near = next(
            (lk.column for lk in q.links.columns if lk.column.textual and abs(lk.end - start) <= 3), None
        )
        holder = next(
            (
                x
                for x in text_cols
                if any(
                    v.strip("[]").lower() == text.lower()
                    or text.lower() in [p.strip().lower() for p in v.strip("[]").split(",")]
                    for v, _ in x.values
                )
            ),
            None,
        )
        col = holder or near or max(text_cols, key=lambda x: x.distinct)
        if col.listlike:
            sql = f"list_contains(string_split(lower(trim({col.sql}, '[]')), ', '), {literal(text.lower())})"
        else:
            sql = f"lower({col.sql}) = {literal(text.lower())}"
        q.filters.append(Filter(col, sql, f"`{col.name}` = '{text}'", start, end, guess=holder is None))
        q.used.update(range(start, end))
        for lk in q.links.columns:
            if lk.column is col and abs(lk.end - start) <= 3:
                q.used.update(range(lk.start, lk.end))
    names = [
        col for col in text_cols if not col.listlike and col.distinct >= 0.5 * max(ctx.schema.row_count, 1)
    ]
    col = max(names or text_cols, key=lambda x: x.distinct)
    groups: list[list[tuple[int, str]]] = []
    for index, word in q.links.entities:
        if any(f.start <= index < f.end for f in q.filters):
            continue
        if groups and groups[-1][-1][0] == index - 1:
            groups[-1].append((index, word))
        else:
            groups.append([(index, word)])
    for group in groups:
        text = " ".join(w for _, w in group)
        first, last = group[0][0], group[-1][0]
        near_link = next(
            (
                lk
                for lk in q.links.columns
                if lk.column.textual and (0 <= first - lk.end <= 1 or 0 <= lk.start - last <= 2)
            ),
            None,
        )
        if near_link is not None:
            ncol = near_link.column
            q.filters.append(
                Filter(
                    ncol,
                    f"lower({ncol.sql}) LIKE {literal('%' + text.lower() + '%')}",
                    f"`{ncol.name}` contains {text}",
                    first,
                    last + 1,
                    guess=True,
                )
            )
            q.used.update(range(near_link.start, near_link.end))
            continue
        q.filters.append(
            Filter(
                col,
                f"lower({col.sql}) LIKE {literal(text.lower() + '%')}",
                f"`{col.name}` = {text}",
                first,
                last + 1,
                guess=True,
            )
        )


def _known_word(schema: Schema, word: str) -> bool:
    """Whether a word is one of the headers' words or the table's name ("product" in `product_name`)."""
    w = stem(word)
    return any(same_word(w, h) for col in schema.columns for h in col.words) or same_word(
        w, stem(schema.table)
    )


_IDENTIFIER = re.compile(r"\b[A-Za-z]+[a-z][A-Z]\w*|\b[A-Za-z]+_\w+")


def _unknown_identifier(q: Question) -> str | None:
    """A camelCase or snake_case word that links to nothing: the person named a column this data lacks."""
    uncovered = set(q.uncovered())
    for m in _IDENTIFIER.finditer(q.text):
        span = [t for t in q.tokens if m.start() <= t.start < m.end()]
        if span and all(t.text in uncovered or t.stem in STOP_STEMS for t in span):
            return m.group(0)
    return None


def _guarded(compose: c.Composer, schema: Schema, guesses: list[Filter]) -> c.Composer:
    """A name matched by spelling only ("Iceland") that matches no row: more likely a misreading than a zero.

    The plan's SQL is wrapped to also count the rows the guessed filters match on their own (`__guess_rows`).
    """

    def run(results: StepResults) -> Answer:
        table = results.sql_table
        if table is not None and GUESS_COLUMN in table.column_names:
            rows = table.column(GUESS_COLUMN).to_pylist()
            results.sql_table = table.drop_columns([GUESS_COLUMN])
            if not rows or not rows[0]:
                what = " and ".join(f.text for f in guesses)
                return c.nothing_matched(schema, f"no row matches {what}, a name I did not find in the data.")
        return compose(results)

    return run


GUESS_COLUMN = "__guess_rows"


def _with_guess_count(sql: str, ctx: _Ctx, guesses: list[Filter]) -> str:
    preds = " AND ".join(f.sql for f in guesses)
    return (
        f"SELECT __q.*, __g.{GUESS_COLUMN} FROM ({sql}) AS __q, "
        f"(SELECT count(*) AS {GUESS_COLUMN} FROM {ctx.table} WHERE {preds}) AS __g"
    )

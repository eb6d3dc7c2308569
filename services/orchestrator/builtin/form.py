"""The typed intermediate form of a question: what to compute, with no SQL in it.

Why: reading and rendering are separate jobs. The reader (`reader.py`) proposes several `Query` candidates,
each slot tied to the words (`Span`) that caused it; the scorer (`scorer.py`) ranks them; the generator
(`sqlgen.py`) renders the chosen one, quoting in one place. A query also says it as a plain question
(`describe`), which is what a clarifying chip shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.orchestrator.builtin.schema import Column

Span = tuple[int, int]  # token indices [start, end) of the words behind a slot

# operations: what is computed over the rows that pass the filters
OPS = (
    "values",  # the answer column's values (a lookup)
    "first",  # the answer column in the first matching row (table order)
    "last",  # … in the last matching row
    "argmax",  # the answer column in the row with the largest measure
    "argmin",
    "count",  # how many rows
    "count_distinct",  # how many different values of the answer column
    "sum",
    "avg",
    "max",
    "min",
    "next",  # the answer column in the row after the (single) matching row
    "previous",
    "pick_max",  # of two named values of one column, the one whose measure is larger
    "pick_min",
    "difference",  # measure of the first named value minus that of the second
    "group_argmax",  # the group (answer column's value) whose aggregate of the measure is largest
    "group_argmin",
)
AGGREGATES = ("sum", "avg", "max", "min")


_AGG_WORD = {"sum": "total", "avg": "average"}
MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


@dataclass(frozen=True)
class Filter:
    """A condition on rows. `column` None: the value may be in any text column (not seen in the profile)."""

    column: Column | None
    op: str  # "=", "match", "!=", ">", ">=", "<", "<=", "decade" (value to value + 9), "month" (1-12)
    value: str | float
    span: Span
    verified: bool = False  # the value was found in this column's profile

    def describe(self) -> str:
        where = f"`{self.column.name}`" if self.column is not None else "a cell"
        if self.op == "decade" and not isinstance(self.value, str):
            return f"{where} is in the {self.value:g}s"
        if self.op == "month" and not isinstance(self.value, str):
            return f"{where} is in {MONTH_NAMES[int(self.value) - 1]}"
        shown = self.value if isinstance(self.value, str) else f"{self.value:g}"
        op = {"match": "is", "=": "is", "!=": "is not"}.get(self.op, self.op)
        return f"{where} {op} {shown!r}" if isinstance(shown, str) else f"{where} {op} {shown}"


@dataclass(frozen=True)
class Query:
    """One reading of a question."""

    op: str
    answer: Column | None = None  # the column whose values answer (None for counts)
    measure: Column | None = None  # the numeric column aggregated, ranked or compared
    filters: tuple[Filter, ...] = ()
    pair: tuple[Filter, Filter] | None = None  # the two named values of pick_*/difference
    limit: int | None = None  # how many answers a ranking returns ("the 3 largest"); None: the best ones
    agg: str = ""  # of a group ranking: "sum", "avg" or "count" (then no measure); of a pick: "count" (rows)
    spans: dict[str, Span] = field(default_factory=dict, hash=False, compare=False)

    def describe(self) -> str:
        """The reading as a plain question a person could click."""
        where = " and ".join(f.describe() for f in self.filters)
        where = f" where {where}" if where else ""
        a = f"`{self.answer.name}`" if self.answer is not None else ""
        m = f"`{self.measure.name}`" if self.measure is not None else ""
        if self.op == "values":
            return f"What is {a}{where}?"
        if self.op in ("first", "last"):
            return f"What is {a} in the {self.op} row{where}?"
        if self.op in ("argmax", "argmin"):
            most = "largest" if self.op == "argmax" else "smallest"
            if self.limit:
                return f"Which {self.limit} {a} have the {most} {m}{where}?"
            return f"Which {a} has the {most} {m}{where}?"
        if self.op in ("group_argmax", "group_argmin"):
            most = "largest" if self.op == "group_argmax" else "smallest"
            what = "number of rows" if self.agg == "count" else f"{_AGG_WORD.get(self.agg, self.agg)} {m}"
            which = f"Which {self.limit} {a} have" if self.limit else f"Which {a} has"
            return f"{which} the {most} {what}{where}?"
        if self.op == "count":
            return f"How many rows are there{where}?"
        if self.op == "count_distinct":
            return f"How many different {a} are there{where}?"
        if self.op in AGGREGATES:
            name = {"sum": "total", "avg": "average", "max": "largest", "min": "smallest"}[self.op]
            return f"What is the {name} {m}{where}?"
        if self.op in ("next", "previous"):
            return f"What is {a} in the row {'after' if self.op == 'next' else 'before'} the one{where}?"
        if self.pair is not None:
            x, y = (f.value for f in self.pair)
            if self.op == "difference":
                return f"What is {m} for {x!r} minus {m} for {y!r}?"
            if self.agg == "count":
                return f"Which of {x!r} and {y!r} has {'more' if self.op == 'pick_max' else 'fewer'} rows?"
            more = "larger" if self.op == "pick_max" else "smaller"
            return f"Which of {x!r} and {y!r} has the {more} {m}?"
        return f"What is {a}{where}?"

"""Other names of a value, when the column itself shows which naming scheme it uses.

Why: people write "Texas" where the data holds `TX`, "Sundays" where it holds `Sun`, "March" where it holds
`Mar`, "women" where it holds `F` (and the other way round). An alias is offered only for a column whose
values are mostly members of one scheme (US states, weekdays, months, sexes), so that "OR" or "ME" in a
column of initials never become Oregon or Maine: the data itself supports the normal form, no table is named.
"""

from __future__ import annotations

from functools import lru_cache

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_STATES = {
    "AL": "Alabama",
    "AK": "Alaska",
    "AZ": "Arizona",
    "AR": "Arkansas",
    "CA": "California",
    "CO": "Colorado",
    "CT": "Connecticut",
    "DE": "Delaware",
    "FL": "Florida",
    "GA": "Georgia",
    "HI": "Hawaii",
    "ID": "Idaho",
    "IL": "Illinois",
    "IN": "Indiana",
    "IA": "Iowa",
    "KS": "Kansas",
    "KY": "Kentucky",
    "LA": "Louisiana",
    "ME": "Maine",
    "MD": "Maryland",
    "MA": "Massachusetts",
    "MI": "Michigan",
    "MN": "Minnesota",
    "MS": "Mississippi",
    "MO": "Missouri",
    "MT": "Montana",
    "NE": "Nebraska",
    "NV": "Nevada",
    "NH": "New Hampshire",
    "NJ": "New Jersey",
    "NM": "New Mexico",
    "NY": "New York",
    "NC": "North Carolina",
    "ND": "North Dakota",
    "OH": "Ohio",
    "OK": "Oklahoma",
    "OR": "Oregon",
    "PA": "Pennsylvania",
    "RI": "Rhode Island",
    "SC": "South Carolina",
    "SD": "South Dakota",
    "TN": "Tennessee",
    "TX": "Texas",
    "UT": "Utah",
    "VT": "Vermont",
    "VA": "Virginia",
    "WA": "Washington",
    "WV": "West Virginia",
    "WI": "Wisconsin",
    "WY": "Wyoming",
    "DC": "District of Columbia",
    "PR": "Puerto Rico",
}


def _calendar(full: tuple[str, ...]) -> dict[str, str]:
    """Both directions between full names and their short forms ("sun", "sept", "tues")."""
    pairs: dict[str, str] = {}
    for name in full:
        for short in {name[:3], name[:4]}:
            pairs[short] = name
        pairs[name] = name[:3]
    pairs["sept"] = "september"
    pairs["thur"] = "thursday"
    pairs["thurs"] = "thursday"
    return pairs


_SCHEMES: dict[str, dict[str, str]] = {
    "weekday": _calendar(WEEKDAYS),
    "month": _calendar(MONTHS),
    "us_state": {
        **{code.lower(): name for code, name in _STATES.items()},
        **{name.lower(): code for code, name in _STATES.items()},
    },
}


_FEMALE = ("female", "f", "woman", "women", "girl", "girls")
_MALE = ("male", "m", "man", "men", "boy", "boys")
# a column of sexes: each value's other names ("women" where the data holds `F` or `female`)
_SEXES = {name: ", ".join(n for n in group if n != name) for group in (_FEMALE, _MALE) for name in group}
_SCHEMES["sex"] = _SEXES


def _member(scheme: str, value: str) -> str | None:
    """The other name of `value` in `scheme` (None when `value` is not a member; several names of the
    sex scheme are joined by ", ")."""
    key = value.strip().rstrip(".").lower()
    return _SCHEMES[scheme].get(key)


@lru_cache(maxsize=4096)
def _scheme_of(values: tuple[str, ...]) -> str | None:
    """The scheme most of a column's values belong to (at least 80% of at least two values), if any."""
    shown = [v for v in values if v.strip()]
    if len(shown) < 2:
        return None
    for scheme in _SCHEMES:
        hits = sum(_member(scheme, v) is not None for v in shown)
        if hits >= 0.8 * len(shown):
            return scheme
    return None


def aliases(value: str, column_values: tuple[str, ...]) -> list[str]:
    """Other names of `value` that a question may use, given the values its column holds."""
    scheme = _scheme_of(column_values)
    if scheme is None:
        return []
    other = _member(scheme, value)
    if other is None:
        return []
    if scheme == "sex":
        return [name for name in other.split(", ") if len(name) > 1]
    return [other if scheme != "us_state" or len(other) > 2 else other.upper()]

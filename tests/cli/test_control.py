"""`meshems policy set` values on the command line (no processes)."""

from __future__ import annotations

import pytest

from meshems.cli.control import parse_policy_values
from meshems.core.errors import ConfigError


# Found by an attack probe: `reserve_forecast=maybe` became False without a word.
def test_policy_values_are_parsed_strictly() -> None:
    assert parse_policy_values(["reserve_forecast=off", "import_limit_kw=40", "shed_order=r1:1,r1:2"]) == {
        "reserve_forecast": False,
        "import_limit_kw": 40.0,
        "shed_order": ["r1:1", "r1:2"],
    }
    assert parse_policy_values(["reserve_forecast=TRUE"]) == {"reserve_forecast": True}
    for bad, text in (("reserve_forecast=maybe", "true or false"), ("cycle_s=fast", "needs a number"),
                      ("nope=1", "known key")):  # fmt: skip
        with pytest.raises(ConfigError, match=text):
            parse_policy_values([bad])

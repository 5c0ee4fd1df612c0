"""Trial attributes are read and written through tuner.study.trial_attrs' names, never raw strings."""

import re
from pathlib import Path

from tuner.study import trial_attrs

PACKAGE = Path(__file__).resolve().parents[2] / "tuner"
# a string literal as the key of a trial's `user_attrs[...]` / `user_attrs.get(...)` / `set_user_attr(...)`
RAW_KEY = re.compile(r"""(?<!study\.)(user_attrs\[|user_attrs\.get\(|set_user_attr\()\s*["']""")


def test_every_trial_attribute_key_is_distinct():
    keys = {name: value for name, value in vars(trial_attrs).items() if name.endswith("_ATTR")}
    assert len(keys) >= 15 and len(set(keys.values())) == len(keys)


def test_no_module_spells_a_trial_attribute_key_itself():
    raw = [f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
           for path in sorted(PACKAGE.rglob("*.py"))
           for number, line in enumerate(path.read_text().splitlines(), start=1) if RAW_KEY.search(line)]
    assert not raw, "use tuner.study.trial_attrs:\n" + "\n".join(raw)


def test_the_scan_finds_a_raw_key():
    assert RAW_KEY.search('family = trial.user_attrs["family"]')
    assert RAW_KEY.search("trial.set_user_attr('cut', reason)")
    assert not RAW_KEY.search("trial.user_attrs.get(FAMILY_ATTR)")

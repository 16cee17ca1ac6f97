"""The README's example test files run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _examples() -> list[str]:
    section = README.read_text().split("## Writing your own tests", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_user_tests_pass(pytester):
    fixtures_example, property_example = _examples()[:2]
    pytester.makepyfile(test_readme_fixtures=fixtures_example)
    pytester.makepyfile(test_readme_property=property_example)
    pytester.makeini("[pytest]\naddopts = -p no:randomly")
    result = pytester.runpytest("test_readme_fixtures.py", "test_readme_property.py", "--hypothesis-profile=dev")
    result.assert_outcomes(passed=4)

"""Repository-wide pytest configuration.

The plugin itself is registered through the ``pytest11`` entry point of the installed package; this
file only chooses the hypothesis settings profile: ``ci`` on CI (CI=true: 200+ examples per
property, derandomized), ``dev`` otherwise, or whatever HYPOTHESIS_PROFILE names.
"""

import os

from hypothesis import settings

from pytest_prune.strategies import register_profiles

register_profiles()
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

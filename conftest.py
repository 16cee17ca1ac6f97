"""Repository-wide pytest configuration.

The plugin itself is registered through the ``pytest11`` entry point of the installed package; this
file only chooses the hypothesis settings profile: ``ci`` when CI is set (200 examples per property,
derandomized), ``dev`` otherwise, or whatever HYPOTHESIS_PROFILE names.
"""

from hypothesis import settings

from pytest_prune.testing.profiles import register_profiles, selected_profile  # no torch: see that module

register_profiles()
settings.load_profile(selected_profile())

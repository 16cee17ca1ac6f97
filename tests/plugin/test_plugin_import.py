"""Installing the plugin does not make every pytest run import the pipeline."""

HEAVY = ("torch", "torch_pruning", "tensorly", "scipy", "pandas", "captum", "sklearn")


def test_a_run_without_gates_imports_no_torch(pytester):
    pytester.makepyfile(test_plain=f"""
        import sys

        def test_nothing_heavy_was_imported():
            assert [m for m in {HEAVY!r} if m in sys.modules] == []
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:benchmark")
    result.assert_outcomes(passed=1)

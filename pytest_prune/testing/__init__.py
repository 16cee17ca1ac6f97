"""Testing aids for surgery property tests: random CNN descriptions and their models
(:mod:`.architectures`), the oracle that follows their channels (:mod:`.oracle`), and the hypothesis
strategies and profiles (:mod:`.strategies`). :mod:`pytest_prune.strategies` re-exports them all."""

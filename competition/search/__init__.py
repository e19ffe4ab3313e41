"""`python -m competition.auto`: a portfolio of recipes known to work, then an Optuna search of their
main knobs, every trial a normal run on the competition's folds, and a blend of the best of them,
all inside one time budget. recipes: what is tried; budget: the clock and the stops; trials: one
trial run; study: the Optuna study and its loop; outcome: the blend, the honest numbers, the report."""

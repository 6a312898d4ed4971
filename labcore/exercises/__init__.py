"""One module per exercise notebook: `notebooks/NN_name.ipynb` is run by `labcore/exercises/name.py` (its plan, its
UPSTREAM, the analyses and sentences only it uses). See labcore.exercises.exercise for the contract."""

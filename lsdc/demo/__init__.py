"""`lsdc demo`: the whole job end to end on a synthetic dataset (pipeline.py runs it, cli.py is the verb)."""

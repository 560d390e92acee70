"""The single-run pipeline: align -> select -> fine-tune -> evaluate, and compare."""

"""``python -m safeselect``: the CLI, so that ``accelerate launch -m safeselect run ...`` and ``torchrun -m`` start it."""

from safeselect.cli.main import entry

if __name__ == "__main__":
    entry()

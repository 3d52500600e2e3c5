"""``python -m mlm.egg``: the command-line interface."""

from mlm.egg.cli import run

if __name__ == "__main__":
    run()

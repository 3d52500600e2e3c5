"""``python -m mlm.egg``: the command-line interface."""

import sys

from mlm.errors import MlmError

try:
    from mlm.egg.cli import run
except MlmError as error:  # no compiled core: the flags' ranges come from it, so even --help needs it
    print(f"error: {error}", file=sys.stderr)
    sys.exit(error.exit_code)

if __name__ == "__main__":
    run()

"""`python -m earthsim.forecast …`: the same command as `earthsim forecast …`."""

import argparse
import sys

from earthsim.errors import EarthsimError
from earthsim.forecast.command import add_arguments, run

parser = argparse.ArgumentParser(prog="python -m earthsim.forecast",
                                 description="Batch forecasts (model rollouts or baselines) into Zarr forecast stores.")
add_arguments(parser)
arguments = parser.parse_args()
try:
    raise SystemExit(run(arguments))
except EarthsimError as error:
    print(f"earthsim forecast: error: {error}", file=sys.stderr)
    raise SystemExit(2)
except OSError as error:  # a file that cannot be read or written: say which, without a traceback
    print(f"earthsim forecast: error: {error.filename or 'a file'}: {error.strerror or error}", file=sys.stderr)
    raise SystemExit(2)

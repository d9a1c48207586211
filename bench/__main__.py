import sys

from bench.arguments import parse_arguments
from bench.install import ensure_installed

arguments = parse_arguments()  # --help and bad flags answer before anything is installed
ensure_installed()

from bench.run import main  # noqa: E402 - needs what ensure_installed provides

sys.exit(main(arguments))

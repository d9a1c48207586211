import sys

from bench.install import ensure_installed

ensure_installed()

from bench.run import main  # noqa: E402 - needs what ensure_installed provides

sys.exit(main())

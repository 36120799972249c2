import signal
import sys

from harness.cli import main

# A cron timeout or a cancelled CI job sends SIGTERM: stop as on Ctrl-C, so the run is marked interrupted.
signal.signal(signal.SIGTERM, signal.default_int_handler)
sys.exit(main())

"""``python -m services.collector``"""

import sys

from services.collector.app import run

sys.exit(run())

"""`python -m benchmarks`: run every benchmarks/*_bench.py and print one table with the machine's description."""
import sys

from benchmarks.run_all import main

sys.exit(main())

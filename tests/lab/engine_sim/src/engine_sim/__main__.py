import sys

from engine_sim.cli import sim_main

sys.exit(sim_main())

"""The lab's own hook point: glue for this lab's benches, next to the suites and the rigs.

hil itself is a pytest plugin registered by entry point, so nothing here is needed for a run:
this file is where a lab adds what is its own, in the usual pytest ways, for `hil run` and
`pytest` alike:

- hil's hooks (`hil/hookspecs.py`), implemented here by name:
  `pytest_hil_online(config, rig, online)` after bring-up brought the device online (log the
  version and boot reason to the lab's dashboard, check the firmware under test is the one a
  release needs), and `pytest_hil_restarted(item, problem, recovery)` after a test broke the
  device and the harness restarted it (page whoever looks after the bench);
- fixtures for the lab's own instruments (a power meter, an RF attenuator), which suites use
  beside `dut`;
- pytest's own hooks, e.g. `pytest_collection_modifyitems` to deselect what a bench lacks.

Example, for a lab that keeps a log of what each bench ran:

    def pytest_hil_online(config, rig, online):
        print(f"{rig.name}: firmware {online.version} up by {online.means}")

Keep drivers out of here: a new relay or console is a driver class and an entry point (see
README, "Rigs"), so every lab and CI runner gets it, not only runs from this folder.
"""

"""The test suite, a regular package: a dependency (lago-python-client) installs a top-level
``tests`` package into site-packages, which would otherwise shadow this folder for
``from tests.faults import ...``."""

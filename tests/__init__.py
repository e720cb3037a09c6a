"""octorelay test suite; modules mirror app/."""

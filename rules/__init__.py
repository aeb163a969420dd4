"""What analysts, SREs and finance tune, as data, and the code that reads it."""

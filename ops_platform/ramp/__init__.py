"""Release ramps: flagd flag files as a typed model, and the guarded executor that edits them."""

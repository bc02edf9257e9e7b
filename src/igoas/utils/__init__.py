"""Small things every layer uses: errors that say what to do, atomic file writes, progress
lines, optional extras, seeds and the version. Imports nothing else of igoas."""

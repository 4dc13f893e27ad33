"""desmarket: placeholder."""

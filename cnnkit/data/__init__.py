"""Data cnnkit makes or takes from installed packages: synthetic ``shapes`` scenes and real digits."""

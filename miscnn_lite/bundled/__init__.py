"""Copies of experiments/, nbs/tutorials/ and the download scripts of data_scripts/ that ship with the package.

Written by `make bundle` (`miscnn_lite.experiments.write_bundle`): edit the repository copies, not these."""

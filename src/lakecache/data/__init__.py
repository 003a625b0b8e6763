"""Datasets: commit a folder to the lake, pull a commit back, list, diff and log."""

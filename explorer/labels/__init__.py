"""User labels: the labelling section (over core.labels' SQLite store) and exports of selections."""

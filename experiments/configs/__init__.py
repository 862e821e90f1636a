"""Study configurations: :mod:`base` holds the dataclass and the paper's defaults; each dataset
config derives from it with every change written next to its value, with its reason."""

"""jaxunlearn: fast approximate machine unlearning for image classifiers in JAX.

Reimplements Khan, "Leveraging Distribution Matching to Make Approximate Machine Unlearning
Faster" (arXiv 2507.09786): Blend dataset condensation, the A-AMU regulariser, the baselines of the
paper and its evaluation protocol.
"""

__version__ = "0.1.0"

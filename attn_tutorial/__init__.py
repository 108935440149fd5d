"""attn_tutorial: seven computer-vision attention mechanisms, built with einops.

One module per paper (``eca``, ``bam``, ``danet``, ``scconv``, ``psa``, ``rest``, ``external``)
plus the baseline ``attention``; ``checks`` holds the exercise checkers, ``bench`` the timing
core, ``cost`` the analytic cost models and ``official`` the loader for the authors' weights.
"""

__version__ = "0.1.0"

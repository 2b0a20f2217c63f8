"""coverage_lab: a testbed for the coverage theory of preference fine-tuning.

Offline contrastive methods (DPO, IPO) need global coverage; online RLHF and HyPO need only partial
(KL-ball) coverage. References: Song, Swamy, Singh, Bagnell, Sun. The Importance of Online Data:
Understanding Preference Fine-tuning via Coverage. arXiv:2406.01462.
"""

from coverage_lab import (
    algorithms,
    bandits,
    coverage,
    data,
    exact,
    fitting,
    losses,
    metrics,
    minimisers,
    policies,
    train,
)
from coverage_lab._compile import jit
from coverage_lab.bandits import LinearBandit, TabularBandit
from coverage_lab.simulation import run, simulate

__all__ = [
    "LinearBandit",
    "TabularBandit",
    "algorithms",
    "bandits",
    "coverage",
    "data",
    "exact",
    "fitting",
    "jit",
    "losses",
    "metrics",
    "minimisers",
    "policies",
    "run",
    "simulate",
    "train",
]
__version__ = "0.1.0"

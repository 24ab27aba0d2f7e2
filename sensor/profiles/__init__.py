"""Agent profiles: per-agent allow-lists of files, secrets, network destinations and programs.

The YAML format is documented in README.md, "Profile reference".
"""

from .globs import PathGlob, TextGlob
from .loader import default_homes, load_profile_file, load_profiles, ownership_problems
from .match import ProcessFacts, find_profile, profile_matches
from .schema import Destination, MatchSelectors, Problem, Profile, ProfileError

__all__ = [
    "Profile",
    "MatchSelectors",
    "PathGlob",
    "TextGlob",
    "Destination",
    "Problem",
    "ProfileError",
    "ProcessFacts",
    "load_profile_file",
    "load_profiles",
    "ownership_problems",
    "profile_matches",
    "find_profile",
    "default_homes",
]

"""Tools for working on mlenv itself (not shipped with it): see tools/localbase."""
